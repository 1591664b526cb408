# One image, three binaries: /manager (the controller manager), /agent (the
# node key writer run by the agent DaemonSet) and /nodeaccess-scorecard (the
# operator's own scorecard test, bundle/tests/scorecard/config.yaml).
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

ENV CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH}
RUN go build -trimpath -ldflags="-s -w" -o manager . && \
    go build -trimpath -ldflags="-s -w" -o agent ./cmd/agent && \
    go build -trimpath -ldflags="-s -w" -o nodeaccess-scorecard ./cmd/scorecard

# distroless/static: no shell, no package manager. The manager runs as the
# image's non-root user; the agent's DaemonSet runs it as root with only the
# capabilities it needs (CHOWN, DAC_OVERRIDE, FOWNER), set in its pod spec.
FROM gcr.io/distroless/static:nonroot
WORKDIR /
COPY --from=builder /workspace/manager /manager
COPY --from=builder /workspace/agent /agent
COPY --from=builder /workspace/nodeaccess-scorecard /nodeaccess-scorecard
USER 65532:65532
ENTRYPOINT ["/manager"]
