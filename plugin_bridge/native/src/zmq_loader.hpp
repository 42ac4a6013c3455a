// Windows: libzmq is delay-loaded by a2llm_client.dll and loaded here, before the first ZeroMQ call, from the folder
// a2llm_client.dll itself was loaded from. Hosts load plugins by full path (Unity's Plugins/x86_64, Unreal's
// Binaries/Win64) and Windows does not search that folder for a DLL's own imports, so a plainly imported libzmq
// beside the core is not found there. Elsewhere (and in builds linking libzmq normally) this does nothing.
#pragma once

namespace a2llm {

// Throws ApiError(A2LLM_ERR_NETWORK) naming the DLL when it cannot be loaded (instead of the delay-load helper's
// process-killing exception at the first ZeroMQ call). Thread-safe; the work is done once.
void ensure_libzmq_loaded();

}  // namespace a2llm
