#ifndef CKBUILD_H
#define CKBUILD_H

#include <stddef.h>
#include <stdint.h>

/// Content-defined chunking (FastCDC with normalised chunking, gear hash).
/// Boundaries depend only on the bytes, so an edit moves at most the chunks around it.
typedef struct {
    size_t min_size;   ///< no cut before this many bytes
    size_t avg_size;   ///< a power of two: the expected chunk size
    size_t max_size;   ///< always cut here
} kb_cdc_params;

/// Returns the length of the first chunk of `data[0..<len]` (len if the data ends first).
size_t kb_cdc_cut(const uint8_t *data, size_t len, const kb_cdc_params *params);

/// syncfs(2): flush the filesystem holding `fd`. Swift's Glibc does not import it.
int kb_syncfs(int fd);

#endif
