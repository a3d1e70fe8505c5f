/* nn: the op set of the backbone and the mapper, one header per op family; include
 * this to get all of them. Every op is nn_<op>_forward(ctx, outputs, inputs, ..., err)
 * and runs on the device of ctx (the tensors must live there): plain C (+ OpenMP,
 * OpenBLAS) on NN_CPU, our kernels + cuBLAS on NN_CUDA. */
#ifndef CMDS_NN_H
#define CMDS_NN_H

#include "activation.h"
#include "attention.h"
#include "backward.h"
#include "blur.h"
#include "conv.h"
#include "cosine.h"
#include "elementwise.h"
#include "linear.h"
#include "norm.h"
#include "optim.h"
#include "resize.h"
#include "tensor.h"
#include "vit.h"

#endif
