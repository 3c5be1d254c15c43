// See cuda_runtime.h: the emulator has one header for the runtime and device language.
#pragma once
#include "cuda_runtime.h"
