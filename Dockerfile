# sockloop in a container: a statically linked binary in an empty (scratch) image.
#
#   podman build --format docker -t sockloop .     (or: docker build -t sockloop .)
#   podman run --rm -p 5001:5001 -p 5001:5001/udp -p 9100:9100 sockloop
#
# `--format docker`: podman writes OCI images by default, and the OCI image format
# has no HEALTHCHECK; podman would drop it with a warning.
#
# The binary can come from outside instead of the build stage: a build context named
# `build` takes the stage's place, and the stage is then skipped (nothing is pulled):
#
#   podman build --format docker --build-context build=DIR -t sockloop .
#
# where DIR holds a static `sockloop` built as below. tests/container.rs builds the
# image this way.

# The build stage. glibc, linked statically (+crt-static): there is no C library in
# a scratch image for a dynamic binary to load. The explicit --target keeps
# RUSTFLAGS away from build scripts and proc macros, which must stay dynamic.
#
# A static glibc cannot load NSS modules, so inside the image host names do not
# resolve: listen on, and send to, IP literals (0.0.0.0, 127.0.0.1), which need no
# lookup.
FROM docker.io/library/rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN target="$(uname -m)-unknown-linux-gnu" \
 && CARGO_PROFILE_RELEASE_STRIP=debuginfo RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --release --locked --target "$target" --bin sockloop \
 && cp "target/$target/release/sockloop" /sockloop

FROM scratch
COPY --from=build /sockloop /sockloop

# Any non-root user: numeric, as a scratch image has no /etc/passwd to name one in.
USER 65532:65532

# Inside a container 127.0.0.1 is the container's own loopback, which a published
# port never reaches: the server must listen on all interfaces. The binary's own
# default stays loopback; the image's is 0.0.0.0. A flag given to `serve` wins over
# these variables.
ENV SOCKLOOP_LISTEN=tcp://0.0.0.0:5001,udp://0.0.0.0:5001 \
    SOCKLOOP_METRICS=tcp://0.0.0.0:9100
EXPOSE 5001/tcp 5001/udp 9100/tcp

# No shell in scratch: the check is the binary itself, in exec form. It sends an
# echo over TCP to the loopback address (an IP literal: see above) and exits non-zero
# when the server refuses or cannot be reached. It checks the echo port rather than
# /healthz: `send` speaks raw bytes, not HTTP, and would exit 0 on any HTTP status.
HEALTHCHECK --interval=10s --timeout=3s --start-period=2s --retries=3 \
    CMD ["/sockloop", "send", "tcp://127.0.0.1:5001", "ping"]

# SIGTERM starts the graceful shutdown (and, with --drain-delay, the drain first).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/sockloop"]
CMD ["serve"]
