# CMake toolchain: cross-compile the native core for Windows x64 with Debian's MinGW-w64 (posix thread model, which
# std::thread needs with GCC 12). Used by `make native-windows`:
#   cmake -S plugin_bridge/native -B build/native-windows \
#         -DCMAKE_TOOLCHAIN_FILE=plugin_bridge/native/windows/mingw-w64-x86_64.cmake \
#         -DA2LLM_ZMQ_DLL=<libzmq-*.dll> -DA2LLM_ZMQ_INCLUDE_DIR=<folder with zmq.h, zmq.hpp>
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR x86_64)
set(A2LLM_MINGW_PREFIX x86_64-w64-mingw32)
set(CMAKE_C_COMPILER ${A2LLM_MINGW_PREFIX}-gcc-posix)
set(CMAKE_CXX_COMPILER ${A2LLM_MINGW_PREFIX}-g++-posix)
set(CMAKE_RC_COMPILER ${A2LLM_MINGW_PREFIX}-windres)
set(CMAKE_FIND_ROOT_PATH /usr/${A2LLM_MINGW_PREFIX})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
# The test executables run under Wine (ctest runs them through it).
find_program(A2LLM_WINE NAMES wine wine64)
if(A2LLM_WINE)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${A2LLM_WINE})
endif()
