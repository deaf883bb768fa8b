/*
 * residency.c - how much of a file already sits in the page cache, from
 * mincore() over a read-only mapping (no page is faulted in). A resident
 * checkpoint is read buffered: O_DIRECT would go to the device again.
 */
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "loader/loader_int.h"

int loader_resident_pct(int fd, uint64_t bytes)
{
    if (bytes == 0)
        return 100;
    long page = sysconf(_SC_PAGESIZE);
    void *map = mmap(NULL, (size_t)bytes, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED)
        return 0;
    size_t n_pages = (size_t)((bytes + (uint64_t)page - 1) / (uint64_t)page);
    unsigned char *vec = thaw_malloc(n_pages);
    int pct = 0;
    if (vec && mincore(map, (size_t)bytes, vec) == 0) {
        size_t resident = 0;
        for (size_t i = 0; i < n_pages; i++)
            resident += vec[i] & 1;
        pct = (int)(resident * 100 / n_pages);
    }
    thaw_free(vec);
    munmap(map, (size_t)bytes);
    return pct;
}
