#ifndef RESHARD_CLIBPQ_SHIM_H
#define RESHARD_CLIBPQ_SHIM_H
#include <libpq-fe.h>
#endif
