#!/usr/bin/env bash
# Side-by-side: the imaging pipeline vs libvips on the same 12 MP photo, as whole processes.
#
#   vipsthumbnail -s 512 in.jpg            one 512 thumbnail (the reference)
#   render_file in.jpg out --crop ...      a face crop → 128² and 512², each as JPEG and WebP
#
# Prints hyperfine's comparison, the ratios (mean, median, min), and each command's peak RSS.
# hyperfine runs one command's series after the other: on a shared machine, compare the
# min ratio, and run it twice.
# Goal: ratio ≤ 1.0 (all four variants in at most one vipsthumbnail call), peak RSS < 200 MB.
# Needs: hyperfine, libvips-tools, time (Debian packages; installed here when running as root).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v hyperfine >/dev/null || need+=(hyperfine)
command -v vipsthumbnail >/dev/null || need+=(libvips-tools)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
    else
        echo "missing: ${need[*]} (apt-get install -y ${need[*]})" >&2
        exit 1
    fi
fi

cargo build --release --quiet --example render_file
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin="$target_dir/release/examples/render_file"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin" --make-fixture "$work/in.jpg"

vips_cmd="vipsthumbnail -s 512 $work/in.jpg -o $work/vips.jpg"
ours_cmd="$bin $work/in.jpg $work/out --sizes 128,512 --crop 800,300,2400,2400"

runs=${RUNS:-30}
hyperfine -N --warmup 3 --runs "$runs" --export-csv "$work/times.csv" \
    -n vipsthumbnail "$vips_cmd" \
    -n render_file "$ours_cmd"

# CSV columns: command,mean,stddev,median,user,system,min,max (seconds).
awk -F, 'NR > 1 { mean[$1] = $2; median[$1] = $4; min[$1] = $7 }
    END {
        printf "\nmean:   vipsthumbnail %.1f ms, render_file %.1f ms, ratio render_file/vips = %.2f\n",
            mean["vipsthumbnail"] * 1000, mean["render_file"] * 1000, mean["render_file"] / mean["vipsthumbnail"]
        printf "median: vipsthumbnail %.1f ms, render_file %.1f ms, ratio render_file/vips = %.2f\n",
            median["vipsthumbnail"] * 1000, median["render_file"] * 1000, median["render_file"] / median["vipsthumbnail"]
        printf "min:    vipsthumbnail %.1f ms, render_file %.1f ms, ratio render_file/vips = %.2f\n",
            min["vipsthumbnail"] * 1000, min["render_file"] * 1000, min["render_file"] / min["vipsthumbnail"]
    }' "$work/times.csv"

peak_rss() {
    /usr/bin/time -v "$@" 2>&1 >/dev/null | awk -F: '/Maximum resident set size/ { gsub(/ /, "", $2); print $2 }'
}
# shellcheck disable=SC2086 # the commands are word-split on purpose
printf 'peak RSS: vipsthumbnail %s KB, render_file %s KB\n' "$(peak_rss $vips_cmd)" "$(peak_rss $ours_cmd)"
ls -l "$work/out"
