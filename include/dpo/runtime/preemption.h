// Preemption: SIGTERM and SIGUSR1 (what Slurm sends before a time limit or a preemption) and the
// first SIGINT (Ctrl-C; a second one exits at once, status 130) only set a flag; the training
// loop reduces it across ranks after every step and between the micro-batches of a step
// (abandoning that step), so every rank stops at the same point, writes a complete checkpoint of
// the last completed step and exits with kPreemptedExitCode; precompute-ref checks it after every
// batch. Restarting the same command resumes.
#pragma once

namespace dpo {

// EX_TEMPFAIL from sysexits.h: "try again later". Job scripts requeue on it.
constexpr int kPreemptedExitCode = 75;

// The dpo executable calls this before any shared library's initialisers run (libtorch's take
// about a second): SIGTERM, SIGUSR1 and SIGINT are blocked, so one that arrives then waits for
// main instead of killing a rank that mpirun has just started. The mask survives exec (the
// thread-environment re-exec).
void defer_stop_signals();
// Unblocks what defer_stop_signals blocked, for a command that does not save on a stop: a signal
// kept meanwhile is delivered now, with its default action.
void release_deferred_stop_signals();
// For a command that saves on a stop: the stop signals stay blocked in the calling thread and in
// every thread started after it, and a thread of dpo's own waits for them (sigwait) and sets the
// flag, so no signal ever interrupts a computing thread (see the .cpp: oneDNN's GEMM kernels put
// the stack pointer in the heap, where a handler's frame corrupts it). Signals sent to the process
// (kill, Slurm, mpirun) reach it; one sent to a single blocking thread (raise, pthread_kill) waits
// there unseen. Idempotent.
void watch_stop_signals();
bool stop_requested();
void clear_stop_request();  // for tests

}  // namespace dpo
