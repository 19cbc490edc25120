/*
 * cloq_chol.c - blocked Cholesky factor and triangular inverse with few parallel regions.
 *
 * OpenBLAS's own potrf/trtri recurse down to small blocks and run each piece as a parallel
 * region: 260 regions for one dpotrf of n = 2752, 60 for an strtri. Each region's barrier waits
 * for a thread the scheduler may have taken off its core, so on a machine shared with other work
 * those calls were a conversion's slowest part. Here one step of NB columns is a small factor
 * on the calling thread (single-threaded LAPACK) and two level-3 calls on the trailing part,
 * each one threaded region: n / NB x 2 regions (22 for n = 2752), large enough to run at the
 * GEMM rate. The reference LAPACK algorithms (dpotrf right-looking, dtrtri left to right) with
 * a fixed NB: the same sums for a given BLAS thread count.
 */
#include "cloq_chol.h"

#include <cblas.h>
#include <lapacke.h>

#include "cloq_solver_internal.h" /* cloq_blas_serial_begin/end */

#define NB 256

#define CHOL_IMPL(NAME, T, POTRF, TRTRI, TRSM, SYRK, TRMM)                                                    \
	int NAME##_potrf_upper(int n, T *A, int lda)                                                           \
	{                                                                                                      \
		if (n <= NB) /* one block: LAPACK's own call, as before this file */                          \
			return POTRF(LAPACK_COL_MAJOR, 'U', n, A, lda);                                        \
		for (int k = 0; k < n; k += NB) {                                                              \
			int kb = n - k < NB ? n - k : NB, r = n - k - kb;                                      \
			T *A11 = A + (size_t)k * lda + k;                                                      \
			int nth = cloq_blas_serial_begin();                                                              \
			int info = POTRF(LAPACK_COL_MAJOR, 'U', kb, A11, lda);                                 \
			cloq_blas_serial_end(nth);                                                                       \
			if (info != 0)                                                                         \
				return info > 0 ? k + info : info;                                             \
			if (r > 0) {                                                                           \
				T *A12 = A + (size_t)(k + kb) * lda + k, *A22 = A + (size_t)(k + kb) * lda + k + kb; \
				/* U12 = U11^-T A12; A22 -= U12^T U12 */                                       \
				TRSM(CblasColMajor, CblasLeft, CblasUpper, CblasTrans, CblasNonUnit, kb, r, 1, A11, \
				     lda, A12, lda);                                                           \
				SYRK(CblasColMajor, CblasUpper, CblasTrans, r, kb, -1, A12, lda, 1, A22, lda); \
			}                                                                                      \
		}                                                                                              \
		return 0;                                                                                      \
	}                                                                                                      \
	int NAME##_trtri_upper(int n, T *A, int lda)                                                           \
	{                                                                                                      \
		if (n <= NB)                                                                                   \
			return TRTRI(LAPACK_COL_MAJOR, 'U', 'N', n, A, lda);                                   \
		for (int j = 0; j < n; j += NB) {                                                              \
			int jb = n - j < NB ? n - j : NB;                                                      \
			T *Ajj = A + (size_t)j * lda + j, *A0j = A + (size_t)j * lda;                          \
			if (j > 0) { /* A[0:j, j:j+jb] = -inv(A[0:j,0:j]) A[0:j, j:j+jb] inv(A_jj) */       \
				TRMM(CblasColMajor, CblasLeft, CblasUpper, CblasNoTrans, CblasNonUnit, j, jb, 1, A, \
				     lda, A0j, lda);                                                           \
				TRSM(CblasColMajor, CblasRight, CblasUpper, CblasNoTrans, CblasNonUnit, j, jb, -1, \
				     Ajj, lda, A0j, lda);                                                      \
			}                                                                                      \
			int nth = cloq_blas_serial_begin();                                                              \
			int info = TRTRI(LAPACK_COL_MAJOR, 'U', 'N', jb, Ajj, lda);                            \
			cloq_blas_serial_end(nth);                                                                       \
			if (info != 0)                                                                         \
				return info > 0 ? j + info : info;                                             \
		}                                                                                              \
		return 0;                                                                                      \
	}

CHOL_IMPL(cloq_d, double, LAPACKE_dpotrf, LAPACKE_dtrtri, cblas_dtrsm, cblas_dsyrk, cblas_dtrmm)
CHOL_IMPL(cloq_s, float, LAPACKE_spotrf, LAPACKE_strtri, cblas_strsm, cblas_ssyrk, cblas_strmm)
