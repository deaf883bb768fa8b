/* engine/cpu.c - placeholder, being written. */
