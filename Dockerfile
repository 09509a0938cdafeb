# imstream: one static binary, every role.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# docker build --build-arg VERSION=$(git describe --tags --always) .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/imstream/imstream/internal/plumbing/obs.Version=${VERSION}" -o /out/imstream ./cmd/imstream

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/imstream /usr/local/bin/imstream
USER nonroot
ENTRYPOINT ["/usr/local/bin/imstream"]
