/*
 * cloq_chol.h - Cholesky factor and triangular inverse in blocks of 256 columns, each step one
 * threaded level-3 region or two (cloq_chol.c says why: OpenBLAS's potrf/trtri run hundreds of
 * small regions, each a barrier that a descheduled thread holds up).
 *
 * Column-major, upper triangle, LAPACK's conventions: returns 0, or i > 0 when the leading minor
 * of order i is not positive definite (potrf) or U(i, i) is zero (trtri), or < 0 for an argument
 * error. Below the diagonal A is not touched.
 *
 * n <= 256: LAPACK's own call (one block). The solver factors H with the float64 forms, GPTQ
 * H^-1 with the float32 ones (docs/DESIGN.md, "Parallel regions on a shared machine").
 */
#ifndef CLOQ_CHOL_H
#define CLOQ_CHOL_H

/* A = U^T U: the upper triangle of A (n, n) becomes U (as LAPACK ?potrf 'U'). */
int cloq_d_potrf_upper(int n, double *A, int lda);
int cloq_s_potrf_upper(int n, float *A, int lda);
/* U <- U^-1 in place, U upper triangular with a non-unit diagonal (as LAPACK ?trtri 'U' 'N'). */
int cloq_d_trtri_upper(int n, double *A, int lda);
int cloq_s_trtri_upper(int n, float *A, int lda);

#endif
