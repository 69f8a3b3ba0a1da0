#include "config.h"

#include "core/blas.h"
#include "core/engine.h"

void
masq_blas_set_threads(int n)
{
	if (n > 0)
		openblas_set_num_threads(n);
}

int
masq_blas_get_threads(void)
{
	return openblas_get_num_threads();
}
