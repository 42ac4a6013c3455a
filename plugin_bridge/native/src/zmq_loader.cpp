#include "zmq_loader.hpp"

#include "client.hpp"

#if defined(_WIN32) && defined(A2LLM_ZMQ_DELAYLOAD_DLL)
#include <windows.h>

#include <mutex>
#include <string>

#define A2LLM_WIDEN2(x) L##x
#define A2LLM_WIDEN(x) A2LLM_WIDEN2(x)

namespace a2llm {

void ensure_libzmq_loaded() {
    static std::once_flag once;
    static std::string error;
    std::call_once(once, [] {
        const std::wstring name = A2LLM_WIDEN(A2LLM_ZMQ_DELAYLOAD_DLL);
        if (GetModuleHandleW(name.c_str()) != nullptr) return;
        HMODULE self = nullptr;
        if (GetModuleHandleExW(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
                               reinterpret_cast<LPCWSTR>(&ensure_libzmq_loaded), &self)) {
            std::wstring path(32768, L'\0');
            DWORD n = GetModuleFileNameW(self, &path[0], static_cast<DWORD>(path.size()));
            if (n > 0 && n < path.size()) {
                path.resize(n);
                std::wstring dir = path.substr(0, path.find_last_of(L"\\/") + 1);
                // altered search path: libzmq's own import (libsodium) resolves from that folder too
                if (LoadLibraryExW((dir + name).c_str(), nullptr, LOAD_WITH_ALTERED_SEARCH_PATH) != nullptr) return;
            }
        }
        if (LoadLibraryW(name.c_str()) != nullptr) return;  // the host's own search path
        error = std::string("cannot load ") + A2LLM_ZMQ_DELAYLOAD_DLL +
                " (it and libsodium-*.dll must sit beside a2llm_client.dll): Windows error " +
                std::to_string(GetLastError());
    });
    if (!error.empty()) throw ApiError(A2LLM_ERR_NETWORK, error);
}

}  // namespace a2llm

#else

namespace a2llm {

void ensure_libzmq_loaded() {}

}  // namespace a2llm

#endif
