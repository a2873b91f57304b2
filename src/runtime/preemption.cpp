#include "dpo/runtime/preemption.h"

#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <mutex>
#include <thread>

namespace dpo {
namespace {

std::atomic<bool> g_stop{false};
std::atomic<int> g_interrupts{0};
static_assert(std::atomic<bool>::is_always_lock_free && std::atomic<int>::is_always_lock_free,
              "the fallback handler below touches them: they must be lock-free to be async-signal-safe");

// Only async-signal-safe work here (write, _exit): the fallback handler calls it too. The loop
// notices the flag at the next micro-batch or step.
void note_stop_signal(int signal) {
  g_stop = true;
  if (signal != SIGINT) return;
  // Ctrl-C: the first stops like SIGTERM (a checkpoint, exit 75); a second one means "now".
  if (++g_interrupts == 1) {
    static const char kFirst[] =
        "\ndpo: interrupted: stopping after this step with a checkpoint (exit 75; rerun to resume); Ctrl-C again to "
        "quit at once\n";
    [[maybe_unused]] const ssize_t n = write(STDERR_FILENO, kFirst, sizeof kFirst - 1);
    return;
  }
  static const char kSecond[] = "\ndpo: interrupted again: quitting without a checkpoint\n";
  [[maybe_unused]] const ssize_t n = write(STDERR_FILENO, kSecond, sizeof kSecond - 1);
  _exit(128 + SIGINT);
}

// For a thread that does not block the stop signals, so that the signal's default action (the
// end of the process) never applies: threads a test program started before watch_stop_signals,
// or a library's thread that unblocks signals itself.
extern "C" void on_stop_signal(int signal) { note_stop_signal(signal); }

sigset_t stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGUSR1);
  sigaddset(&set, SIGINT);
  return set;
}

}  // namespace

void defer_stop_signals() {
  const sigset_t set = stop_signals();
  sigprocmask(SIG_BLOCK, &set, nullptr);
}

void release_deferred_stop_signals() {
  const sigset_t set = stop_signals();
  sigprocmask(SIG_UNBLOCK, &set, nullptr);
}

// A handler interrupting a computing thread gets its frame (~3 KiB with the AVX-512 state) written
// below that thread's stack pointer. oneDNN's generated f32 GEMM kernels (AVX2 and AVX-512; Debian
// 12's libdnnl2 2.6, which dpo's float32 products call) point rsp at a workspace in the heap while
// they run, so the frame lands in the heap (oneDNN issue #4845, fixed in 2026 by PR #4855). A stop
// signal that came during a one-thread rank's product corrupted it ("corrupted size vs.
// prev_size", then an abort) in 5 of 12 stops here. So no computing thread takes the signals: they
// stay blocked in this thread, hence in every thread it starts from now on, and one thread of ours
// takes them with sigwait.
void watch_stop_signals() {
  static std::once_flag started;
  std::call_once(started, [] {
    const sigset_t set = stop_signals();
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    struct sigaction action {};
    action.sa_handler = on_stop_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;  // a signal must not fail an MPI call or a file write with EINTR
    sigaction(SIGTERM, &action, nullptr);
    sigaction(SIGUSR1, &action, nullptr);
    sigaction(SIGINT, &action, nullptr);
    std::thread([set] {
      pthread_setname_np(pthread_self(), "dpo-signals");  // for top, gdb and the tests to tell it apart
      for (int signal = 0;;)
        if (sigwait(&set, &signal) == 0) note_stop_signal(signal);
    }).detach();
  });
}

bool stop_requested() { return g_stop; }

void clear_stop_request() {
  g_stop = false;
  g_interrupts = 0;
}

}  // namespace dpo
