/*
 * cloq_npy.h - read and write NumPy .npy files (token ids, calibration windows, small references).
 *
 * ---- The format (numpy.lib.format), byte by byte ----
 *   [0, 6)    magic "\x93NUMPY"
 *   [6, 8)    version major, minor: 1.0 (header length uint16 LE at [8,10)) or 2.0 / 3.0
 *             (header length uint32 LE at [8,12))
 *   then      the header: a Python dict literal in ASCII (UTF-8 for 3.0), e.g.
 *             {'descr': '<i4', 'fortran_order': False, 'shape': (151, 256), }
 *             padded with spaces and ended by '\n' so that the data starts at a multiple of 64
 *   then      the data, prod(shape) elements, C order (row-major), no trailing bytes.
 *
 * cloq reads little-endian '<i4', '<i8', '<f4', '<f8' arrays of 1 or 2 dimensions in C order.
 * Fortran order, big-endian ('>'), other types, bad magic, a malformed header, truncated or
 * trailing data are CLOQ_EINPUT with a message naming the file and what is wrong.
 * Writing goes through cloq_atomic_* (temp file, fsync, rename): version 1.0, C order.
 */
#ifndef CLOQ_NPY_H
#define CLOQ_NPY_H

#include <stddef.h>
#include <stdint.h>

#include "cloq_dtype.h"
#include "cloq_error.h"

/* What a header says. For a 1-D array ndim == 1 and shape[1] == 1, so shape[0] x shape[1] is
 * always the element count. */
typedef struct cloq_npy_info {
	enum cloq_dtype dtype;  /* CLOQ_DT_I32, _I64, _F32 or _F64 */
	int ndim;               /* 1 or 2 */
	int64_t shape[2];       /* (rows, cols) */
	uint64_t nelem;
	uint64_t data_offset;   /* byte offset of the first element */
} cloq_npy_info;

/* Parse the magic and header in buf[0..len) (len may cover the whole file or just its start);
 * `path` is for messages. Checks only the header, not that the data is all there. */
int cloq_npy_parse_header(const uint8_t *buf, size_t len, const char *path, cloq_npy_info *info,
			  cloq_err *err);

/* Read an integer array ('<i4', or '<i8' whose values all fit int32; else CLOQ_EINPUT naming the
 * first flat index that does not) into a new buffer *data of shape[0] x shape[1] int32, row-major,
 * owned by the caller (cloq_free). info may be NULL. */
int cloq_npy_read_i32(const char *path, int32_t **data, cloq_npy_info *info, cloq_err *err);
/* Read '<f4' or '<f8' (or '<i4' / '<i8', converted) into a new float buffer. An f8 value outside
 * the float range is CLOQ_EINPUT. */
int cloq_npy_read_f32(const char *path, float **data, cloq_npy_info *info, cloq_err *err);

/* Write data, shape (rows, cols) row-major (ndim 2) or (rows) (ndim 1, shape[1] ignored), atomically. */
int cloq_npy_write_i32(const char *path, const int32_t *data, int ndim, const int64_t *shape,
		       cloq_err *err);
int cloq_npy_write_f32(const char *path, const float *data, int ndim, const int64_t *shape,
		       cloq_err *err);

#endif /* CLOQ_NPY_H */
