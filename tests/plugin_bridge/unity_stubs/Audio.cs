// UnityEngine audio stubs: AudioClip (sample storage, GetData wraps around like Unity's), AudioSource, AudioSettings,
// Microphone (a looping clip the console test writes into through internal hooks).
using System;
using System.Collections.Generic;

namespace UnityEngine
{
    public sealed class AudioClip : Object
    {
        internal float[] Data; // interleaved
        public int samples { get; private set; }
        public int channels { get; private set; }
        public int frequency { get; private set; }

        public static AudioClip Create(string name, int lengthSamples, int channels, int frequency, bool stream)
        {
            if (lengthSamples <= 0 || channels <= 0 || frequency <= 0) throw new ArgumentException("bad AudioClip.Create arguments");
            var c = new AudioClip();
            c.name = name;
            c.samples = lengthSamples;
            c.channels = channels;
            c.frequency = frequency;
            c.Data = new float[lengthSamples * channels];
            return c;
        }

        /// <summary>Like Unity: reads data.Length values from sample offsetSamples, wrapping at the end.</summary>
        public bool GetData(float[] data, int offsetSamples)
        {
            if (data == null || offsetSamples < 0 || offsetSamples >= samples) return false;
            int pos = offsetSamples * channels;
            for (int i = 0; i < data.Length; i++)
            {
                data[i] = Data[pos];
                pos = (pos + 1) % Data.Length;
            }
            return true;
        }

        public bool SetData(float[] data, int offsetSamples)
        {
            if (data == null || offsetSamples < 0 || offsetSamples >= samples) return false;
            int pos = offsetSamples * channels;
            for (int i = 0; i < data.Length; i++)
            {
                Data[pos] = data[i];
                pos = (pos + 1) % Data.Length;
            }
            return true;
        }
    }

    public sealed class AudioSource : Behaviour
    {
        public AudioClip clip;
        public bool loop;
        public bool playOnAwake = true;
        public float volume = 1f;
        public float spatialBlend;
        public bool isPlaying { get; private set; }

        public void Play()
        {
            isPlaying = true;
        }

        public void Stop()
        {
            isPlaying = false;
        }
    }

    public static class AudioSettings
    {
        internal static int TestOutputSampleRate = 48000;
        internal static int TestBufferLength = 1024;
        internal static int TestNumBuffers = 4;

        public static int outputSampleRate
        {
            get { return TestOutputSampleRate; }
        }

        public static void GetDSPBufferSize(out int bufferLength, out int numBuffers)
        {
            bufferLength = TestBufferLength;
            numBuffers = TestNumBuffers;
        }

        public static double dspTime
        {
            get { return Time.TestTime; }
        }
    }

    public static class Microphone
    {
        internal static int TestMinFreq = 44100;
        internal static int TestMaxFreq = 48000;
        private static AudioClip _clip;
        private static int _position;
        private static bool _recording;

        public static string[] devices
        {
            get { return new[] { "Test Microphone" }; }
        }

        public static void GetDeviceCaps(string deviceName, out int minFreq, out int maxFreq)
        {
            minFreq = TestMinFreq;
            maxFreq = TestMaxFreq;
        }

        public static AudioClip Start(string deviceName, bool loop, int lengthSec, int frequency)
        {
            if (!loop) throw new NotSupportedException("stub: only looping microphone clips");
            _clip = AudioClip.Create("Microphone", lengthSec * frequency, 1, frequency, false);
            _position = 0;
            _recording = true;
            return _clip;
        }

        public static void End(string deviceName)
        {
            _recording = false;
        }

        public static bool IsRecording(string deviceName)
        {
            return _recording;
        }

        public static int GetPosition(string deviceName)
        {
            return _recording ? _position : 0;
        }

        /// <summary>Test hook: the "device" records these mono samples into the looping clip.</summary>
        internal static void TestRecord(float[] samples)
        {
            if (!_recording) return;
            _clip.SetData(samples, _position);
            _position = (_position + samples.Length) % _clip.samples;
        }

        internal static int TestFrequency
        {
            get { return _clip != null ? _clip.frequency : 0; }
        }
    }
}
