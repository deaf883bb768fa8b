/* cli/cli_engine.c - placeholder, being written. */
