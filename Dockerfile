# mailgate container image (docs/operations.md, "Container image").
#
# Release build, from the repository root, with a Go toolchain image:
#
#   docker build --build-arg VERSION=1.0.0 -t mailgate .
#
# Without pulling any image (target "prebuilt": every stage it needs is
# FROM scratch): build the static binary first and put it beside the CA
# roots in dist/:
#
#   CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=1.0.0" \
#     -o dist/mailgate ./cmd/mailgate
#   cp /etc/ssl/certs/ca-certificates.crt dist/
#   podman build --format docker --target prebuilt -t mailgate .
#
# Both targets give the same image: a static binary, CA roots, a non-root
# user (mailgate, 65532), /etc/mailgate for config and policy (mount it),
# /var/lib/mailgate for state (a volume), a HEALTHCHECK on the admin
# listener's /readyz. SIGHUP reloads, SIGTERM drains (docker stop -t 45).
# podman needs --format docker to keep the HEALTHCHECK (OCI image configs
# have none).

ARG GO_IMAGE=golang:1.26-bookworm

# The Go toolchain stage (release target only).
FROM ${GO_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/mailgate ./cmd/mailgate \
 && /out/mailgate version \
 && cp /etc/ssl/certs/ca-certificates.crt /out/

# An empty directory to copy. (The COPY makes every builder write the
# stage out; the file is not used.)
FROM scratch AS empty
WORKDIR /empty
COPY docs/deploy/image/group /group

# Everything but the binary and the CA roots, shared by both targets.
FROM scratch AS base
COPY docs/deploy/image/passwd docs/deploy/image/group /etc/
# The state directory belongs to the runtime user, or a fresh volume would
# be root's and read-only to mailgate; /var/lib is made first, root's, so
# that only the last component is the user's.
COPY --from=empty /empty /var/lib
COPY --from=empty --chown=65532:65532 /empty /var/lib/mailgate
LABEL org.opencontainers.image.title="mailgate" \
      org.opencontainers.image.description="Mail edge proxy: IMAP, POP3 and SMTP logins admitted by country and network"
# Non-root, no capabilities needed: listen on ports >= 1024 inside the
# container and publish 993 etc. onto them, or add NET_BIND_SERVICE
# (docs/operations.md). Docker's own bridge network already lets any
# user bind low ports (net.ipv4.ip_unprivileged_port_start=0).
USER 65532:65532
EXPOSE 993 995 465 587
VOLUME ["/var/lib/mailgate"]
# mailgate health reads admin.address from the config and GETs /readyz
# (backends reachable, a certificate loaded); it gives up after 5 s.
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/mailgate", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/mailgate"]
CMD ["serve", "-config", "/etc/mailgate/mailgate.yaml"]

# Pull-free target: the binary and CA roots from dist/ in the context.
FROM base AS prebuilt
COPY dist/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY dist/mailgate /usr/local/bin/mailgate
ARG VERSION=dev
LABEL org.opencontainers.image.version="${VERSION}"

# Release target (the default: the last stage), built by the Go stage.
FROM base AS release
COPY --from=build /out/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/mailgate /usr/local/bin/mailgate
ARG VERSION=dev
LABEL org.opencontainers.image.version="${VERSION}"
