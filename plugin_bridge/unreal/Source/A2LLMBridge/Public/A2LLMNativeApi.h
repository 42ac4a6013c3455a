// Copyright a2llm. The native core's C ABI as a table of function pointers, filled at run time from the loaded
// library (FPlatformProcess::GetDllExport, as Epic's ThirdPartyLibrary plugin template does): no import library and
// no link-time dependency on a2llm_client, so a missing or wrong core is a logged error, not a crash at start-up.
//
// This header includes no engine header (only a2llm_client.h): tests/plugin_bridge/test_plugins.py compiles it
// with g++ and clang at -Wall -Wextra -Wshadow -Werror and loads every symbol from the built cores (Linux .so,
// Windows DLL under Wine).
#pragma once

#include "a2llm_client.h"

namespace A2LLM
{
// Every function of a2llm_client.h, in header order. X(name) is expanded once per function.
#define A2LLM_NATIVE_FUNCTIONS(X)                                                                                    \
	X(a2llm_version)                                                                                                 \
	X(a2llm_abi_version)                                                                                             \
	X(a2llm_protocol_version)                                                                                        \
	X(a2llm_last_error)                                                                                              \
	X(a2llm_layout_dims)                                                                                             \
	X(a2llm_client_options_init)                                                                                     \
	X(a2llm_client_create)                                                                                           \
	X(a2llm_client_destroy)                                                                                          \
	X(a2llm_client_state)                                                                                            \
	X(a2llm_client_wait_ready)                                                                                       \
	X(a2llm_client_send_audio_pcm16)                                                                                 \
	X(a2llm_client_send_audio_f32)                                                                                   \
	X(a2llm_client_cancel)                                                                                           \
	X(a2llm_client_poll)                                                                                             \
	X(a2llm_client_stats)                                                                                            \
	X(a2llm_client_read_audio)                                                                                       \
	X(a2llm_client_playback_position)                                                                                \
	X(a2llm_client_face_frame_at)                                                                                    \
	X(a2llm_client_session_version)                                                                                  \
	X(a2llm_character_init)                                                                                          \
	X(a2llm_client_set_character)                                                                                    \
	X(a2llm_client_set_context)                                                                                      \
	X(a2llm_client_set_emotion)                                                                                      \
	X(a2llm_client_send_text)                                                                                        \
	X(a2llm_client_send_mic_pcm16)                                                                                   \
	X(a2llm_client_send_mic_f32)                                                                                     \
	X(a2llm_client_server_info)                                                                                      \
	X(a2llm_client_voice_name)                                                                                       \
	X(a2llm_client_emotion_name)                                                                                     \
	X(a2llm_client_layouts)                                                                                          \
	X(a2llm_client_curve_count)                                                                                      \
	X(a2llm_client_curve_name)

	/** Function pointers named like the C functions: `Api.a2llm_client_poll(Client, &Event)`. */
	struct FNativeApi
	{
#define A2LLM_NATIVE_POINTER(Name) decltype(&::Name) Name = nullptr;
		A2LLM_NATIVE_FUNCTIONS(A2LLM_NATIVE_POINTER)
#undef A2LLM_NATIVE_POINTER

		/**
		 * Fills every pointer with Resolve("a2llm_...") (a `void*(const char*)` callable, e.g. wrapping
		 * FPlatformProcess::GetDllExport). Returns nullptr when all resolved and the library speaks
		 * A2LLM_ABI_VERSION, else a static message naming what is wrong (then the table is cleared).
		 */
		template <typename FResolve>
		const char* Load(FResolve&& Resolve)
		{
			const char* Missing = nullptr;
#define A2LLM_NATIVE_RESOLVE(Name)                                                                                   \
	Name = reinterpret_cast<decltype(Name)>(Resolve(#Name));                                                         \
	if (Name == nullptr && Missing == nullptr)                                                                       \
	{                                                                                                                \
		Missing = "the native core does not export " #Name " (an older a2llm_client? rebuild it)";                   \
	}
			A2LLM_NATIVE_FUNCTIONS(A2LLM_NATIVE_RESOLVE)
#undef A2LLM_NATIVE_RESOLVE
			if (Missing == nullptr && a2llm_abi_version() != A2LLM_ABI_VERSION)
			{
				Missing = "the native core speaks another ABI version than this plugin (rebuild or update it)";
			}
			if (Missing != nullptr)
			{
				*this = FNativeApi();
			}
			return Missing;
		}

		/** True when Load succeeded. */
		bool IsLoaded() const { return a2llm_client_create != nullptr; }
	};
}
