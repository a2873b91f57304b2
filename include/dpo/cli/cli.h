// The `dpo` command line: subcommand dispatch, flags, usage. main() only calls run_cli.
#pragma once

namespace dpo {

// Returns the process exit code. Errors are printed as one line on stderr.
int run_cli(int argc, char** argv);

}  // namespace dpo
