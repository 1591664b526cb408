# One image, three binaries: /manager (the controller manager), /agent (the
# node key writer run by the agent DaemonSet) and /nodeaccess-scorecard (the
# operator's own scorecard test, bundle/tests/scorecard/config.yaml).
#
# `make image` builds the same image without docker (hack/image): the same
# files, entrypoint and user, static binaries built with the same flags. Its
# test reads this file and fails when the two disagree.
FROM golang:1.26 AS builder
ARG TARGETOS
ARG TARGETARCH

WORKDIR /workspace
COPY go.mod go.sum ./
RUN go mod download

COPY main.go main.go
COPY api/ api/
COPY cmd/ cmd/
COPY controllers/ controllers/
COPY internal/ internal/

ENV CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} GOFLAGS=
RUN go build -trimpath -buildvcs=false -ldflags="-s -w -buildid=" -o manager . && \
    go build -trimpath -buildvcs=false -ldflags="-s -w -buildid=" -o agent ./cmd/agent && \
    go build -trimpath -buildvcs=false -ldflags="-s -w -buildid=" -o nodeaccess-scorecard ./cmd/scorecard

# Nothing but the three static binaries: no shell, no package manager, no
# libraries. The manager runs as the non-root user 65532 (numeric, so no
# /etc/passwd is needed); the agent's DaemonSet runs it as root with only
# the capabilities it needs (CHOWN, DAC_OVERRIDE, FOWNER), set in its pod spec.
FROM scratch
COPY --from=builder /workspace/manager /manager
COPY --from=builder /workspace/agent /agent
COPY --from=builder /workspace/nodeaccess-scorecard /nodeaccess-scorecard
USER 65532:65532
ENTRYPOINT ["/manager"]
