/* engine/engine.c - placeholder, being written. */
