// Catch2 main for the unit tests (our own, so that it reads the same on Catch2 2 and 3).
#define CATCH_CONFIG_RUNNER
#include "catch2_api.h"

int main(int argc, char** argv) { return Catch::Session().run(argc, argv); }
