#!/usr/bin/env bash
# Build the Katib trial image from trial_image/Dockerfile, and the Debian base images it is built on.
#
#   trial_image/build.sh image [--base IMAGE|stand-in] [--tag NAME:TAG] [--no-cache]   (make image: the GPU image)
#   trial_image/build.sh suggestion-image [--base IMAGE] [--tag NAME:TAG] [--no-cache]   (make suggestion-image)
#                                             the suggestion service's image (suggestion.Dockerfile): no torch
#   trial_image/build.sh base [--force]       the Debian base (debootstrap, Python, no torch), built when missing
#   trial_image/build.sh stand-in [--force]   the base plus the local CPU torch wheel: the tests' CPU stand-in
#   trial_image/build.sh resolve REPORT.json  pip's resolution of the image's dependencies (--dry-run --report) in
#                                             the base, with the build's pip settings: what `image` would install
#   trial_image/build.sh push DEST [--tag NAME:TAG]   push a built image, e.g. DEST=<registry>/katib-hpo-trial:<tag>
#   trial_image/build.sh sizes                image sizes in the store (uncompressed, and gzip-compressed as pushed)
#   trial_image/build.sh buildah ARGS...      buildah on this script's store (what the tests use)
#   trial_image/build.sh run-container IMAGE  a working container of IMAGE for `buildah run`, reused while unchanged
#
# Engine: `docker build` when a Docker daemon answers, else buildah (--isolation chroot, --storage-driver vfs: no
# daemon, no overlay mounts). HPO_IMAGE_ENGINE=docker|buildah picks one. buildah keeps its images in a store of its
# own, HPO_IMAGE_STORE (default ~/.cache/katib-hpo/containers), never inside the repo; `push` pushes from it.
#
# Default tag: the image that manifests/kustomization.yaml's `images:` names (ghcr.io/katib-hpo/trial:0.1.0); the
# suggestion image: the same registry and tag, name suggestion (ghcr.io/katib-hpo/suggestion:0.1.0, the name that
# manifests/overlays/katib-hpo-multiobjective registers).
# Default base: the Dockerfile's BASE_IMAGE, the Debian base this script makes: debootstrap --variant=minbase of the
# Debian release whose python3 is the Dockerfile's PYTHON_MINOR (3.11: bookworm, 3.13: trixie), a venv at /opt/venv
# first on PATH, no torch. The Dockerfile installs constraints.txt's torch pin, PyPI's CUDA build, into it.
# `--base stand-in` is that base with torch preinstalled from the local CPU wheel (constraints.txt's version, in
# pip's find-links): the same Dockerfile then installs nothing for torch and builds with TORCH_BUILD=cpu.
#
# pip inside the build gets the machine's CA bundle and its http(s) index settings through read-only bind mounts
# (over /root: ~/.config/pip/), so it works behind a TLS-inspecting proxy; nothing of them is committed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
DOCKERFILE=$ROOT/trial_image/Dockerfile
SUGGESTION_DOCKERFILE=$ROOT/trial_image/suggestion.Dockerfile
STORE=${HPO_IMAGE_STORE:-${XDG_CACHE_HOME:-$HOME/.cache}/katib-hpo/containers}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# the image's Python minor has one home, the Dockerfile's ARG PYTHON_MINOR; the Debian release whose python3 it is
PY_MINOR=$(sed -n 's/^ARG PYTHON_MINOR=//p' "$DOCKERFILE" | head -n1)
# pip's settings for RUN steps: a folder mounted read-only over /root (root's home, in every base image), so pip
# finds ~/.config/pip/pip.conf. Mounting over a folder that already exists leaves nothing behind in the image.
PIP_DIR=/root/.config/pip

say() { echo "trial_image/build.sh: $*" >&2; }
die() { say "$*"; exit 2; }

bh() { buildah --root "$STORE/storage" --runroot "$STORE/run" --storage-driver vfs "$@"; }
export BUILDAH_ISOLATION=chroot

torch_version() { sed -n 's/^torch==\([^ ;#]*\).*/\1/p' "$ROOT/constraints.txt" | head -n1; }
debian_suite() {
    case "$PY_MINOR" in
        3.11) echo bookworm ;;
        3.13) echo trixie ;;
        *) die "no Debian release ships python3 $PY_MINOR (the Dockerfile's ARG PYTHON_MINOR): build on a base of
  your own, e.g. make image BASE_IMAGE=docker.io/library/python:$PY_MINOR-slim" ;;
    esac
}
base_tag() { echo "localhost/katib-hpo/trial-base:py$PY_MINOR-$(debian_suite)"; }
standin_tag() { echo "localhost/katib-hpo/trial-base:py$PY_MINOR-torch$(torch_version)-cpu"; }

KIND=trial  # or suggestion: `suggestion-image` builds suggestion.Dockerfile with the same machinery

# the suggestion image's name:tag: the trial image's registry and tag, name suggestion
suggestion_image() { local trial; trial=$(kustomize_image); [[ -n $trial ]] && echo "${trial%/*}/suggestion:${trial##*:}"; }

# name:tag from manifests/kustomization.yaml's first images: entry (newName wins over name)
kustomize_image() {
    awk '
        /^images:/ { inside = 1; next }
        inside && /^[^ -]/ { inside = 0 }
        inside && /^- / { if (seen++) exit }
        inside { sub(/^- /, "  ") }
        inside && $1 == "name:" { name = $2 }
        inside && $1 == "newName:" { newname = $2 }
        inside && $1 == "newTag:" { tag = $2 }
        END { gsub(/["\047]/, "", name); gsub(/["\047]/, "", newname); gsub(/["\047]/, "", tag)
              if (newname != "") name = newname
              if (name != "" && tag != "") print name ":" tag }
    ' "$ROOT/manifests/kustomization.yaml"
}


# buildah resolves no short names here: pytorch/pytorch:x -> docker.io/pytorch/pytorch:x, as docker does
qualify() {
    local ref=$1 first=${1%%/*}
    if [[ $ref != */* ]]; then echo "docker.io/library/$ref"
    elif [[ $first == *.* || $first == *:* || $first == localhost ]]; then echo "$ref"
    else echo "docker.io/$ref"; fi
}

pick_engine() {
    case "${HPO_IMAGE_ENGINE:-auto}" in
        docker | buildah) echo "$HPO_IMAGE_ENGINE"; return ;;
        auto) ;;
        *) die "HPO_IMAGE_ENGINE=$HPO_IMAGE_ENGINE: use docker or buildah" ;;
    esac
    if command -v docker >/dev/null && timeout 20 docker info --format '{{.ServerVersion}}' >/dev/null 2>&1; then
        echo docker
    elif command -v buildah >/dev/null; then
        echo buildah
    elif command -v docker >/dev/null; then
        die "docker is installed but no Docker daemon answers (docker info failed), and buildah is not installed.
  Start the Docker daemon, or install buildah, which builds without a daemon:
    apt-get install -y --no-install-recommends buildah      (Debian/Ubuntu; dnf install buildah on Fedora/RHEL)"
    else
        die "neither docker nor buildah is installed. Install one of them:
    apt-get install -y --no-install-recommends buildah      (Debian/Ubuntu, no daemon needed; dnf install buildah on Fedora/RHEL)
    or Docker Engine with a running daemon: https://docs.docker.com/engine/install/"
    fi
}

need_buildah() {
    command -v buildah >/dev/null || die "buildah is not installed: apt-get install -y --no-install-recommends buildah"
    case "$(realpath -m "$STORE")/" in
        "$ROOT"/*) die "HPO_IMAGE_STORE=$STORE lies inside the repo: point it outside (default ~/.cache/katib-hpo)" ;;
    esac
    mkdir -p "$STORE"
}

# one build at a time per store: parallel test sessions queue here instead of racing on the same names
lock_store() { exec 9>"$STORE/build.lock"; flock 9; }

have_image() {
    if [[ $1 == docker ]]; then docker image inspect "$2" >/dev/null 2>&1
    else bh inspect --type image "$2" >/dev/null 2>&1; fi
}

# a folder mounted read-only over /root during RUN steps: .config/pip/ holds pip.conf, the CA bundle, constraints
make_build_config() {
    local dir=$1/.config/pip ca="" url kind line key value
    mkdir -p "$dir"
    for candidate in "${PIP_CERT:-}" "${REQUESTS_CA_BUNDLE:-}" "${SSL_CERT_FILE:-}" /etc/ssl/certs/ca-certificates.crt \
                     /etc/pki/tls/certs/ca-bundle.crt; do
        if [[ -n $candidate && -f $candidate ]]; then ca=$candidate; break; fi
    done
    cp "$ROOT/constraints.txt" "$dir/constraints.txt"
    {
        echo "[global]"
        if [[ -n $ca ]]; then cp "$ca" "$dir/ca.crt"; echo "cert = $PIP_DIR/ca.crt"; fi
        # forward the host's http(s) package indexes (file:// ones and local constraint files do not exist inside);
        # `pip config list` sorts :env: (PIP_*) before the files, and the first value of a key wins, as in pip
        if command -v python3 >/dev/null && python3 -m pip --version >/dev/null 2>&1; then
            python3 -m pip config list 2>/dev/null | sort | while IFS= read -r line; do
                key=${line%%=*}; value=${line#*=}; value=${value#\'}; value=${value%\'}
                kind=${key##*.}
                case "$kind" in
                    index-url | extra-index-url)
                        urls=""
                        for url in $value; do
                            if [[ $url == http://* || $url == https://* ]]; then urls+=" $url"; fi
                        done
                        if [[ -n $urls ]]; then echo "$kind =$urls"; fi ;;
                    trusted-host | timeout | default-timeout | retries) echo "$kind = $value" ;;
                esac
            done | awk -F' = ?' '!seen[$1]++' || true
        fi
    } >"$dir/pip.conf"
}

# -------------------------------------------------------------------------------------------- the base images
find_torch_wheel() {
    local version=$1 dir links tag=cp${PY_MINOR/./}
    links=${PIP_FIND_LINKS:-}
    if [[ -z $links ]] && command -v python3 >/dev/null; then
        links=$(python3 -m pip config list 2>/dev/null | sed -n "s/^[^=]*\.find-links='\(.*\)'$/\1/p" | tr '\n' ' ')
    fi
    for dir in $links /opt/wheels; do
        dir=${dir#file://}
        [[ -d $dir ]] || continue
        for wheel in "$dir"/torch-"$version"+cpu-"$tag"-"$tag"-*linux*_x86_64.whl; do
            [[ -f $wheel ]] && { echo "$wheel"; return; }
        done
    done
}

need_root_tools() {
    need_buildah
    command -v debootstrap >/dev/null || die "debootstrap is not installed: apt-get install -y --no-install-recommends debootstrap"
    [[ $(id -u) == 0 ]] || die "the base images are built as root (debootstrap and buildah's chroot isolation need it)"
}

# Debian minbase + python3 + venv: the GPU image's default base. No torch and no CUDA: both come as wheels.
build_base() {
    local force=${1:-0} tag suite ctr mnt start
    need_root_tools
    tag=$(base_tag); suite=$(debian_suite)
    lock_store
    if [[ $force == 0 ]] && have_image buildah "$tag"; then say "base $tag is cached in $STORE"; return; fi
    start=$SECONDS
    ctr=$(bh from --name "katib-hpo-base-$$" scratch)
    # shellcheck disable=SC2064
    trap "bh rm '$ctr' >/dev/null 2>&1 || true" EXIT
    mnt=$(bh mount "$ctr")
    say "debootstrap $suite (minbase + python3, python3-venv, ca-certificates) from $DEBIAN_MIRROR"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "$suite" "$mnt" "$DEBIAN_MIRROR" \
        >"$STORE/debootstrap.log" 2>&1 || { tail -n 20 "$STORE/debootstrap.log" >&2; die "debootstrap failed (log: $STORE/debootstrap.log)"; }
    rm -rf "$mnt"/var/cache/apt/archives/*.deb "$mnt"/var/lib/apt/lists/* "$mnt"/var/log/*.log
    say "debootstrap done ($((SECONDS - start)) s); venv at /opt/venv"
    bh run "$ctr" -- python3 -m venv /opt/venv
    bh config --env PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
        --label org.opencontainers.image.title=katib-hpo-trial-base \
        --label "org.opencontainers.image.description=Base of the katib-hpo trial image: Debian $suite minbase, Python $PY_MINOR venv at /opt/venv, no torch" \
        --cmd python3 --workingdir / "$ctr"
    # what the Dockerfile relies on: the first python3 on PATH is PYTHON_MINOR, with pip
    bh run "$ctr" -- python3 -c "import sys; assert '%d.%d' % sys.version_info[:2] == '$PY_MINOR', sys.version; import pip; print('base: python', sys.version.split()[0], 'pip', pip.__version__)"
    bh umount "$ctr" >/dev/null
    bh commit --quiet --rm "$ctr" "$tag" >/dev/null
    trap - EXIT
    say "built base $tag in $((SECONDS - start)) s (store: $STORE)"
}

# the base plus constraints.txt's torch as the local CPU wheel: the tests build the same Dockerfile on it, offline
build_standin() {
    local force=${1:-0} tag version wheel ctr cfg start
    need_root_tools
    tag=$(standin_tag); version=$(torch_version)
    if [[ $force == 0 ]] && have_image buildah "$tag"; then say "stand-in base $tag is cached in $STORE"; return; fi
    have_image buildah "$(base_tag)" || build_base 0
    lock_store
    start=$SECONDS
    wheel=$(find_torch_wheel "$version")
    cfg=$(mktemp -d); make_build_config "$cfg"
    ctr=$(bh from --pull=never --name "katib-hpo-standin-$$" "$(base_tag)")
    # shellcheck disable=SC2064
    trap "bh rm '$ctr' >/dev/null 2>&1 || true; rm -rf '$cfg'" EXIT
    local run=(bh run -v "$cfg:/root:ro" -e HOME=/root -e PIP_DISABLE_PIP_VERSION_CHECK=1)
    if [[ -n $wheel ]]; then
        say "torch from the local CPU wheel $wheel"
        "${run[@]}" -v "$(dirname "$wheel"):/run/katib-hpo-wheels:ro" "$ctr" -- /opt/venv/bin/python -m pip install \
            --no-cache-dir -c "$PIP_DIR/constraints.txt" "/run/katib-hpo-wheels/$(basename "$wheel")"
        rmdir "$(bh mount "$ctr")"/run/katib-hpo-wheels 2>/dev/null || true
        bh umount "$ctr" >/dev/null
    else
        say "no torch-$version+cpu wheel in pip's find-links: installing torch==$version from PyTorch's CPU index"
        "${run[@]}" "$ctr" -- /opt/venv/bin/python -m pip install --no-cache-dir -c "$PIP_DIR/constraints.txt" \
            --index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple "torch==$version"
    fi
    bh config --label org.opencontainers.image.title=katib-hpo-trial-base-cpu \
        --label "org.opencontainers.image.description=CPU stand-in for the trial image's base: $(base_tag) plus torch $version CPU" \
        "$ctr"
    bh run "$ctr" -- python3 -c "import torch; assert torch.version.cuda is None; print('stand-in: torch', torch.__version__)"
    bh commit --quiet --rm "$ctr" "$tag" >/dev/null
    trap - EXIT; rm -rf "$cfg"
    say "built stand-in base $tag in $((SECONDS - start)) s (store: $STORE)"
}

# What `image` would install on the base: pip's resolution of the context with the build's pip settings, in a
# working container of the base, written as pip's JSON installation report (nothing is installed).
resolve() {
    local report=${1:?resolve REPORT.json} ctr cfg src start
    need_root_tools
    have_image buildah "$(base_tag)" || build_base 0
    start=$SECONDS  # no lock_store: its container has a name of its own, and buildah locks its store itself
    cfg=$(mktemp -d); make_build_config "$cfg"
    src=$(mktemp -d)  # a writable copy of what the Dockerfile copies: pip builds the project's metadata in it
    (cd "$ROOT" && cp -r pyproject.toml constraints.txt README.md hpo_lib "$src/")
    find "$src" -name __pycache__ -prune -exec rm -rf {} +
    ctr=$(bh from --pull=never --name "katib-hpo-resolve-$$" "$(base_tag)")
    # shellcheck disable=SC2064
    trap "bh rm '$ctr' >/dev/null 2>&1 || true; rm -rf '$cfg' '$src'" EXIT
    bh run -v "$cfg:/root:ro" -v "$src:/opt/hpo/src" -e HOME=/root -e PIP_DISABLE_PIP_VERSION_CHECK=1 \
        --workingdir /opt/hpo/src "$ctr" -- python3 -m pip install --quiet --dry-run --ignore-installed \
        --report /opt/hpo/src/report.json -c constraints.txt . >&2
    cp "$src/report.json" "$report"
    bh rm "$ctr" >/dev/null; trap - EXIT; rm -rf "$cfg" "$src"
    say "resolved the image's dependencies on $(base_tag) in $((SECONDS - start)) s: $report"
}

# -------------------------------------------------------------------------------------------- the trial image
# everything the build reads (the arguments: base, its ID, tag, torch build, the pip.conf the RUN steps see);
# an equal digest means an equal image. Not this script: editing it must not force a rebuild of several GB
context_digest() {
    (cd "$ROOT" && {
        printf '%s\n' "$@"
        sha256sum "$DOCKERFILE" .dockerignore pyproject.toml constraints.txt README.md LICENSE \
            trial_image/suggestion-requirements.txt
        find hpo_lib -type f ! -path '*/__pycache__/*' ! -name '*.py[co]' -print0 | sort -z | xargs -0 sha256sum
    } | sha256sum | cut -d' ' -f1)
}

report_failure() {  # $1 = build log
    local step
    step=$(grep -E '^(STEP [0-9]+/[0-9]+:|#[0-9]+ \[.*[0-9]+/[0-9]+\])' "$1" | tail -n1 || true)
    say "the image build FAILED${step:+ at Dockerfile step: $step}"
    grep -E '^(error building at STEP|Error:|ERROR:)' "$1" | tail -n3 >&2 || true
    say "full build log: $1"
    exit 1
}

build_image() {
    local base="" tag="" no_cache=0 engine base_id digest log cfg status start
    while (($#)); do
        case "$1" in
            --base) base=$2; shift ;;
            --base=*) base=${1#*=} ;;
            --tag) tag=$2; shift ;;
            --tag=*) tag=${1#*=} ;;
            --no-cache) no_cache=1 ;;
            *) die "image: unknown option $1" ;;
        esac
        shift
    done
    engine=$(pick_engine)
    if [[ $KIND == suggestion ]]; then tag=${tag:-$(suggestion_image)}; else tag=${tag:-$(kustomize_image)}; fi
    [[ -n $tag ]] || die "no image under images: in manifests/kustomization.yaml; pass --tag NAME:TAG"
    # the two bases this script makes (the default and the CPU stand-in): built when missing, never pulled
    local torch_build=cuda own="" build_args
    if [[ $KIND == suggestion ]]; then
        torch_build=""
        case "$base" in stand-in | "$(standin_tag)") die "suggestion-image: the service needs no torch, so no stand-in:
  build it on the default base (trial_image/build.sh suggestion-image) or one of your own (--base IMAGE)" ;; esac
    fi
    case "$base" in
        stand-in | "$(standin_tag)") base=$(standin_tag); own=stand-in; torch_build=cpu ;;
        "" | "$(base_tag)") base=$(base_tag); own=base ;;
    esac
    if [[ -n $own ]]; then
        if [[ $engine == buildah ]]; then
            have_image buildah "$base" || "build_${own/-/}" 0
        elif ! have_image docker "$base"; then  # build it with buildah, then hand it to the Docker daemon
            "build_${own/-/}" 0
            bh push "$base" "docker-daemon:$base"
        fi
    fi
    base=$(qualify "$base")
    build_args=(--build-arg "BASE_IMAGE=$base")
    if [[ -n $torch_build ]]; then build_args+=(--build-arg "TORCH_BUILD=$torch_build"); fi
    if [[ $engine == buildah ]]; then need_buildah; lock_store; fi
    if ! have_image "$engine" "$base"; then
        say "base image $base is not in the local store; pulling it"
        if [[ $engine == buildah ]]; then timeout 1800 buildah --root "$STORE/storage" --runroot "$STORE/run" \
            --storage-driver vfs pull "$base" >&2; else docker pull "$base" >&2; fi || die "base image $base is missing locally and could not be pulled.
  Without registry access, build on the Debian base this script makes (debootstrap, Python $PY_MINOR):
    make image                         # the GPU image on $(base_tag)
    make image BASE_IMAGE=stand-in     # the CPU image the tests use (the base plus the local CPU torch wheel)"
    fi
    start=$SECONDS
    if [[ $engine == docker ]]; then
        log=$(mktemp "${TMPDIR:-/tmp}/katib-hpo-image-build.XXXXXX.log")
        say "docker build $tag on $base"
        set +e
        docker build -f "$DOCKERFILE" "${build_args[@]}" --label "io.katib-hpo.base-image=$base" \
            -t "$tag" "$ROOT" 2>&1 | tee "$log"
        status=${PIPESTATUS[0]}
        set -e
        ((status == 0)) || report_failure "$log"
        rm -f "$log"
    else
        base_id=$(bh inspect --type image --format '{{.FromImageID}}' "$base")
        cfg=$(mktemp -d); make_build_config "$cfg"
        digest=$(context_digest "$base" "$base_id" "$tag" "$torch_build" "$(cat "$cfg/.config/pip/pip.conf")")
        if [[ $no_cache == 0 ]] && [[ $(bh inspect --type image --format \
                '{{index .OCIv1.Config.Labels "io.katib-hpo.context-sha256"}}' "$tag" 2>/dev/null) == "$digest" ]]; then
            say "$tag is up to date (same Dockerfile, context and base image); --no-cache rebuilds it"
            rm -rf "$cfg"; return
        fi
        mkdir -p "$STORE/logs"; log=$STORE/logs/build-$(date +%Y%m%d-%H%M%S)-$$.log
        find "$STORE/logs" -name 'build-*.log' -mtime +7 -delete  # failed builds' logs, kept a week
        say "buildah build $tag on $base (store: $STORE; log: $log)"
        set +e
        bh build --isolation chroot --layers=false --force-rm --pull=never -f "$DOCKERFILE" "${build_args[@]}" \
            --label "io.katib-hpo.base-image=$base" --label "io.katib-hpo.context-sha256=$digest" \
            -v "$cfg:/root:ro" -t "$tag" "$ROOT" 2>&1 | tee "$log"
        status=${PIPESTATUS[0]}
        set -e
        rm -rf "$cfg"
        ((status == 0)) || report_failure "$log"
        rm -f "$log"
        bh rmi --prune >/dev/null 2>&1 || true  # the image this build replaced: with vfs, a full copy on disk
    fi
    say "built $tag on $base (${torch_build:+torch: $torch_build build, }$(basename "$DOCKERFILE")) with $engine in $((SECONDS - start)) s"
}

# A working container of IMAGE for `buildah run`, kept while the image is unchanged: with vfs storage, creating one
# copies the whole image and removing it deletes that copy, a minute or more each. Containers of older images go.
run_container() {
    local image=${1:?run-container IMAGE} id name other prefix
    need_buildah; lock_store
    id=$(bh inspect --type image --format '{{.FromImageID}}' "$image")
    # one container per image name (the cpu and the GPU image keep theirs), replaced when that image is rebuilt
    prefix=katib-hpo-run-$(printf '%s' "$image" | sha256sum | cut -c1-8)
    name=$prefix-${id:0:12}
    for other in $(bh containers --format '{{.ContainerName}}'); do
        if [[ $other == "$prefix"-* && $other != "$name" ]]; then bh rm "$other" >/dev/null; fi
    done
    bh rmi --prune >/dev/null 2>&1 || true  # images that only those containers still held
    bh inspect --type container "$name" >/dev/null 2>&1 || bh from --pull=never --name "$name" "$image" >/dev/null
    echo "$name"
}

push_image() {
    local dest="" tag="" engine base
    while (($#)); do
        case "$1" in
            --tag) tag=$2; shift ;;
            --tag=*) tag=${1#*=} ;;
            -*) die "push: unknown option $1" ;;
            *) dest=$1 ;;
        esac
        shift
    done
    [[ -n $dest ]] || die "push: name the destination, e.g. trial_image/build.sh push <registry>/katib-hpo-trial:<tag>"
    tag=${tag:-$(kustomize_image)}; engine=$(pick_engine)
    if [[ $engine == docker ]]; then
        base=$(docker image inspect --format '{{index .Config.Labels "io.katib-hpo.base-image"}}' "$tag")
    else
        need_buildah
        base=$(bh inspect --type image --format '{{index .OCIv1.Config.Labels "io.katib-hpo.base-image"}}' "$tag")
    fi
    if [[ $base == "$(standin_tag)" && ${HPO_PUSH_CPU_IMAGE:-0} != 1 ]]; then
        die "$tag was built on the CPU stand-in ($base), which has no CUDA: rebuild it on the default base with
  \`make image\`, or set HPO_PUSH_CPU_IMAGE=1 to push a CPU-only image on purpose"
    fi
    if [[ $engine == docker ]]; then docker tag "$tag" "$dest" && docker push "$dest"
    else bh push "$tag" "docker://${dest#docker://}"; fi
}

sizes() {
    need_buildah
    local out image
    bh images --format '{{.Name}}:{{.Tag}}  {{.Size}}  (uncompressed)'
    for image in "$(base_tag)" "$(standin_tag)" "$(kustomize_image)" "$@"; do
        have_image buildah "$image" || continue
        out=$(mktemp -d)
        bh push --quiet --compression-format gzip "$image" "oci:$out" >/dev/null
        echo "$image  $(du -sb "$out/blobs" | cut -f1) bytes as gzip layers (what a registry stores)"
        rm -rf "$out"
    done
}

command=${1:-}
shift || true
case "$command" in
    image) build_image "$@" ;;
    suggestion-image) KIND=suggestion; DOCKERFILE=$SUGGESTION_DOCKERFILE; build_image "$@" ;;
    suggestion-image-name) suggestion_image ;;
    base) if [[ ${1:-} == --force ]]; then build_base 1; else build_base 0; fi ;;
    stand-in) if [[ ${1:-} == --force ]]; then build_standin 1; else build_standin 0; fi ;;
    resolve) resolve "$@" ;;
    push) push_image "$@" ;;
    sizes) sizes "$@" ;;
    buildah) need_buildah; bh "$@" ;;
    run-container) run_container "$@" ;;
    standin-tag) standin_tag ;;
    base-tag) base_tag ;;
    image-name) kustomize_image ;;
    *) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0" >&2; exit 2 ;;
esac
