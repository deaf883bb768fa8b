/*
 * cli_simulate.c - `thaw simulate` (being written).
 */
#include <stdio.h>

#include "cli/cli_int.h"

int cli_simulate(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "thaw simulate: not built yet\n"); return 1; }
