#include "dpo/runtime/preemption.h"

#include <unistd.h>

#include <csignal>

namespace dpo {
namespace {

volatile std::sig_atomic_t g_stop = 0;
volatile std::sig_atomic_t g_interrupts = 0;

// Only async-signal-safe work here (write, _exit): the loop notices the flag at the next
// micro-batch or step.
extern "C" void on_stop_signal(int signal) {
  g_stop = 1;
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

void install_stop_signal_handlers() {
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // a signal must not fail an MPI call or a file write with EINTR
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGUSR1, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
}

bool stop_requested() { return g_stop != 0; }

void clear_stop_request() {
  g_stop = 0;
  g_interrupts = 0;
}

}  // namespace dpo
