#!/usr/bin/env bash
# Give a headless Linux machine real PortAudio devices: PortAudio itself plus a PulseAudio
# server with a null sink (whose .monitor source records what is played). Prints the
# exports to eval; best effort: without root/apt it only reports what is missing.
set -uo pipefail
need=()
ldconfig -p 2>/dev/null | grep -q libportaudio.so.2 || need+=(libportaudio2)
command -v pulseaudio >/dev/null 2>&1 || need+=(pulseaudio)
[ -e /usr/lib/x86_64-linux-gnu/alsa-lib/libasound_module_pcm_pulse.so ] || \
    ls /usr/lib/*/alsa-lib/libasound_module_pcm_pulse.so >/dev/null 2>&1 || need+=(libasound2-plugins)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup_audio: installing ${need[*]}" >&2
        (DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null 2>&1 ||
         { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null 2>&1; }) ||
            echo "setup_audio: could not install ${need[*]}; the real-device test will be skipped" >&2
    else
        echo "setup_audio: missing ${need[*]} (not root); the real-device test will be skipped" >&2
    fi
fi
if command -v pulseaudio >/dev/null 2>&1 && [ "$(uname)" = Linux ]; then
    dir=$(mktemp -d)
    if XDG_RUNTIME_DIR=$dir pulseaudio -D --exit-idle-time=-1 --disallow-exit -n \
        --load="module-null-sink sink_name=moshi_null" --load=module-native-protocol-unix >/dev/null 2>&1; then
        echo "export XDG_RUNTIME_DIR=$dir"
        echo "export MOSHI_PULSE_STARTED=1"
    fi
fi
