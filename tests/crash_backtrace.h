// On a fatal signal a test binary prints its stack before it dies of that signal, so that a crash
// seen only on another machine (the GPU device check has no debugger) says where it happened. The
// binaries are linked with -rdynamic (ENABLE_EXPORTS), so that frames of dpo's code have names.
// The mains define CATCH_CONFIG_NO_POSIX_SIGNALS: Catch2 2's own handlers would name only the test
// case (Catch2 3 installs its handlers inside its library and still does, during each test case).
#pragma once
#include <execinfo.h>
#include <signal.h>
#include <unistd.h>

#include <cstring>

namespace crash_backtrace {

inline void print_stack_and_die(int signal_number) {
  // Only async-signal-safe calls: write, and backtrace (whose library was loaded by install()).
  const char* name = strsignal(signal_number);
  const char intro[] = "\nfatal signal in a test binary: ";
  [[maybe_unused]] ssize_t written = write(STDERR_FILENO, intro, sizeof intro - 1);
  written = write(STDERR_FILENO, name, std::strlen(name));
  written = write(STDERR_FILENO, "; stack of the thread that got it:\n", 35);
  void* frames[64];
  backtrace_symbols_fd(frames, backtrace(frames, 64), STDERR_FILENO);
  raise(signal_number);  // SA_RESETHAND: the default action now, so the process dies of the signal
}

inline void install() {
  void* warm[1];
  backtrace(warm, 1);  // loads libgcc_s now rather than inside the handler
  struct sigaction action {};
  action.sa_handler = print_stack_and_die;
  action.sa_flags = SA_RESETHAND | SA_NODEFER;
  sigemptyset(&action.sa_mask);
  for (const int signal_number : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT}) sigaction(signal_number, &action, nullptr);
}

}  // namespace crash_backtrace
