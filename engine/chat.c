/* engine/chat.c - placeholder, being written. */
