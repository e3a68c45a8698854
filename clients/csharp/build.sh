#!/usr/bin/env bash
# Builds Psyserve.Client.dll (.NET Framework 4.x / .NET Standard 2.0 API surface, C# 7.2) with Mono's mcs
# from the one copy of the sources: clients/unity/com.psyserve.client/Runtime/*.cs.
# Usage: clients/csharp/build.sh [OUT_DIR]   (default: clients/csharp/bin)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
src="$here/../unity/com.psyserve.client/Runtime"
out="${1:-$here/bin}"
mkdir -p "$out"
mcs -langversion:7.2 -target:library -optimize+ -warnaserror+ \
    -r:System.Net.Http.dll -r:System.Numerics.dll \
    -out:"$out/Psyserve.Client.dll" "$src"/*.cs
echo "$out/Psyserve.Client.dll"
