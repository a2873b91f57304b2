// Preemption: SIGTERM and SIGUSR1 (what Slurm sends before a time limit or a preemption) only set a
// flag; the training loop reduces it across ranks after every step, so every rank stops at the
// same step, writes a complete checkpoint and exits with kPreemptedExitCode. Restarting the same
// command resumes from that checkpoint.
#pragma once

namespace dpo {

// EX_TEMPFAIL from sysexits.h: "try again later". Job scripts requeue on it.
constexpr int kPreemptedExitCode = 75;

void install_stop_signal_handlers();
bool stop_requested();
void clear_stop_request();  // for tests

}  // namespace dpo
