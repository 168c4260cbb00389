#ifndef STARKV_CPROTOBUFC_SHIM_H
#define STARKV_CPROTOBUFC_SHIM_H
#include <protobuf-c/protobuf-c.h>
#endif
