/*
 * blas.h: the one place that includes CBLAS and LAPACKE, so their include
 * paths stay in one header (STYLE.md item 5).  Only core/ .c files include
 * it; the thread control other floors need is declared in core/engine.h.
 */
#ifndef MASQ_BLAS_H
#define MASQ_BLAS_H

#include <cblas.h>
#include <lapacke.h>

#endif
