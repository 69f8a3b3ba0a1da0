/*
 * blas.h: the one place that includes CBLAS and LAPACKE, so their include
 * paths and OpenBLAS's thread control stay in one header (STYLE.md item 5).
 * Only core/ includes it.
 */
#ifndef MASQ_BLAS_H
#define MASQ_BLAS_H

#include <cblas.h>
#include <lapacke.h>

/* Pin OpenBLAS to n threads (n <= 0: leave as configured). */
void masq_blas_set_threads(int n);
int masq_blas_get_threads(void);

#endif
