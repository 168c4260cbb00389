#ifndef STARKV_CZSTD_SHIM_H
#define STARKV_CZSTD_SHIM_H
#include <zstd.h>
#endif
