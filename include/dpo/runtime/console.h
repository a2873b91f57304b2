// What a long run prints while it goes: a status line (training steps, precompute-ref progress)
// rewritten in place on a terminal and one line each in a log file, and the duration format of
// its ETA. Owns nothing about what the line says.
#pragma once
#include <string>

namespace dpo {

// Whether progress may be rewritten in place with '\r': stdout is a terminal and no launcher stands
// between it and the user. Open MPI gives rank 0 a pseudo-terminal even when mpirun's output goes to
// a file (a Slurm job log, `mpirun ... > log`), so under mpirun or Slurm progress is one line each.
bool stdout_is_interactive();

// Prints `line` on stdout and flushes: on a terminal over the previous status line ('\r', padded to
// `width` columns so a shorter line leaves nothing behind), elsewhere as a line of its own.
void print_status_line(const std::string& line, int width);
// Ends the status line rewritten in place (a newline on a terminal, nothing elsewhere).
void end_status_line();

// "4m07s" under an hour, "1h05m" from one hour on; negative durations count as 0.
std::string format_duration(double seconds);

}  // namespace dpo
