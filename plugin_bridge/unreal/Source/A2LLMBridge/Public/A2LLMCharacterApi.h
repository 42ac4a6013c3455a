// Copyright a2llm. The game character (protocol version 2, PROTOCOL.md 10) over the native core's C ABI, without any
// engine header: UTF-8 strings in, a2llm_status out. UA2LLMAvatarComponent converts its FString properties to UTF-8
// and calls these; tests/plugin_bridge/test_plugins.py compiles this header with g++ and clang at -Wall -Wextra
// -Wshadow -Werror and runs it against the built cores (plugin_bridge/native/tests/unreal_native_api.cpp).
#pragma once

#include <cstdint>
#include <string>

#include "A2LLMNativeApi.h"

namespace A2LLM
{
	/** A character in UTF-8 (empty strings = the server's defaults: its default persona, its first voice, neutral). */
	struct FCharacterUtf8
	{
		std::string Persona;
		std::string Voice;
		std::string Emotion;
		float Intensity = 0.f;
		bool bEmotionInPrompt = true; // the emotion as an instruction in the prompt (A2-LLM)
		bool bEmotionOnFace = true;   // a bounded offset/gain on the ARKit output, blended (Audio2Face)
	};

	/**
	 * Sends (or, before the Welcome, stores) the character; the core re-sends it after every reconnect. Returns
	 * A2LLM_OK or a negative a2llm_status (Api.a2llm_last_error() says why): INVALID_ARGUMENT (bad UTF-8, intensity
	 * outside 0..1, and once the server's ServerInfo arrived: unknown voice or emotion, persona over its limit),
	 * UNSUPPORTED (a version 1 server).
	 */
	inline int32_t ApplyCharacter(const FNativeApi& Api, a2llm_client* Client, const FCharacterUtf8& Character)
	{
		a2llm_character Ch;
		Api.a2llm_character_init(&Ch);
		Ch.emotion_modes = (Character.bEmotionInPrompt ? A2LLM_EMOTION_PROMPT : 0u) |
			(Character.bEmotionOnFace ? A2LLM_EMOTION_FACE : 0u);
		Ch.intensity = Character.Intensity;
		Ch.persona = Character.Persona.c_str();
		Ch.voice = Character.Voice.c_str();
		Ch.emotion = Character.Emotion.c_str();
		return Api.a2llm_client_set_character(Client, &Ch);
	}

	/** The server's voice (bVoices) or emotion names, in its order; empty before its ServerInfo (or version 1). */
	template <typename FAdd>
	inline void ForEachServerName(const FNativeApi& Api, a2llm_client* Client, bool bVoices, FAdd&& Add)
	{
		a2llm_server_info Info;
		if (Api.a2llm_client_server_info(Client, &Info) != 1)
		{
			return;
		}
		const uint32_t Count = bVoices ? Info.n_voices : Info.n_emotions;
		for (uint32_t Index = 0; Index < Count; ++Index)
		{
			const char* Name = bVoices ? Api.a2llm_client_voice_name(Client, static_cast<int32_t>(Index))
				: Api.a2llm_client_emotion_name(Client, static_cast<int32_t>(Index));
			if (Name != nullptr)
			{
				Add(Name);
			}
		}
	}

	/** A turn the server started itself (a hands-free utterance). */
	inline bool IsServerTurn(uint32_t TurnId) { return (TurnId & A2LLM_SERVER_TURN_BIT) != 0; }

	/** The mic rate to stream at: the device rate when the server accepts it, else 0 (resample to 16000 first). */
	inline uint32_t AcceptedMicRate(const FNativeApi& Api, a2llm_client* Client, uint32_t DeviceRate)
	{
		a2llm_server_info Info;
		if (Api.a2llm_client_server_info(Client, &Info) != 1)
		{
			return 0;
		}
		for (uint32_t Index = 0; Index < Info.n_mic_rates && Index < 8; ++Index)
		{
			if (Info.mic_rates[Index] == DeviceRate)
			{
				return DeviceRate;
			}
		}
		return 0;
	}
}
