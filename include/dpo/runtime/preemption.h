// Preemption: SIGTERM and SIGUSR1 (what Slurm sends before a time limit or a preemption) and the
// first SIGINT (Ctrl-C; a second one exits at once, status 130) only set a flag; the training loop reduces it across ranks after every step and between the micro-batches
// of a step (abandoning that step), so every rank stops at the same point, writes a complete
// checkpoint of the last completed step and exits with kPreemptedExitCode; precompute-ref checks
// it after every batch. Restarting the same command resumes.
#pragma once

namespace dpo {

// EX_TEMPFAIL from sysexits.h: "try again later". Job scripts requeue on it.
constexpr int kPreemptedExitCode = 75;

void install_stop_signal_handlers();
bool stop_requested();
void clear_stop_request();  // for tests

}  // namespace dpo
