/* engine/sampler.c - placeholder, being written. */
