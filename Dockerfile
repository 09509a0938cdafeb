# imstream: one static binary, every role.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/imstream ./cmd/imstream

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/imstream /usr/local/bin/imstream
USER nonroot
ENTRYPOINT ["/usr/local/bin/imstream"]
