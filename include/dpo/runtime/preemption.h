// Preemption: SIGTERM and SIGUSR1 (what Slurm sends before a time limit or a preemption) and the
// first SIGINT (Ctrl-C; a second one exits at once, status 130) only set a flag; the training loop reduces it across ranks after every step and between the micro-batches
// of a step (abandoning that step), so every rank stops at the same point, writes a complete
// checkpoint of the last completed step and exits with kPreemptedExitCode; precompute-ref checks
// it after every batch. Restarting the same command resumes.
#pragma once

namespace dpo {

// EX_TEMPFAIL from sysexits.h: "try again later". Job scripts requeue on it.
constexpr int kPreemptedExitCode = 75;

// The dpo executable calls this before any shared library's initialisers run (libtorch's take
// about a second): SIGTERM, SIGUSR1 and SIGINT are blocked, so one that arrives then waits for
// main instead of killing a rank that mpirun has just started. The mask survives exec (the
// thread-environment re-exec).
void defer_stop_signals();
// Unblocks what defer_stop_signals blocked: a signal kept meanwhile is delivered now, to the
// handler where install_stop_signal_handlers ran first, else with its default action.
void release_deferred_stop_signals();
void install_stop_signal_handlers();
bool stop_requested();
void clear_stop_request();  // for tests

}  // namespace dpo
