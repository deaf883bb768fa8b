/* engine/model.c - placeholder, being written. */
