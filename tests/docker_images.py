"""The cheap real-container case for the Docker tests: a stdlib Go HTTP server in an image FROM scratch.

``write_go_service(folder)`` writes a service folder: ``app`` (a static binary, CGO_ENABLED=0,
built once per source and cached under the engine's root), ``VERSION``, and a Dockerfile
``FROM scratch`` that copies both. The server listens on $PORT; ``GET /`` answers JSON with its
$DEVBOX_INSTANCE_ID and the VERSION baked into the image, ``GET /healthz`` 200; it prints one
line per request (the container log) and exits 0 on SIGTERM (as PID 1 it must handle it itself).
``GO_EXIT_AFTER=S`` makes it exit 3 after S seconds (restart tests); ``GO_STATUS=500`` makes ``GET /``
answer that status (a broken version for release gates).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from devbox.testing import DOCKER_ROOT

GO_SERVER = """\
package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	raw, _ := os.ReadFile("/VERSION")
	version := strings.TrimSpace(string(raw))
	port := os.Getenv("PORT")
	fmt.Printf("go service %s starting on %s as %s\\n", version, port, os.Getenv("DEVBOX_INSTANCE_ID"))
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-sigs; fmt.Println("go service: SIGTERM, bye"); os.Exit(0) }()
	if s := os.Getenv("GO_EXIT_AFTER"); s != "" {
		secs, _ := strconv.ParseFloat(s, 64)
		go func() { time.Sleep(time.Duration(secs * float64(time.Second))); fmt.Println("go service: exiting on purpose"); os.Exit(3) }()
	}
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Printf("GET %s\\n", r.URL.Path)
		w.Header().Set("Content-Type", "application/json")
		if code, _ := strconv.Atoi(os.Getenv("GO_STATUS")); code != 0 {
			w.WriteHeader(code)
		}
		json.NewEncoder(w).Encode(map[string]string{"instance": os.Getenv("DEVBOX_INSTANCE_ID"), "version": version,
			"service": os.Getenv("DEVBOX_SERVICE")})
	})
	if err := http.ListenAndServe("127.0.0.1:"+port, nil); err != nil {
		fmt.Println("listen:", err)
		os.Exit(1)
	}
}
"""  # noqa: E501

DOCKERFILE = 'FROM scratch\nCOPY app /app\nCOPY VERSION /VERSION\nCMD ["/app"]\n'


def go_binary() -> Path:
    """The static Go server, built once per source text (cached next to the test engine's data)."""
    digest = hashlib.sha256(GO_SERVER.encode()).hexdigest()[:12]
    cache = DOCKER_ROOT / "go-cache" / digest
    binary = cache / "app"
    if binary.exists():
        return binary
    go = shutil.which("go") or "/usr/local/go/bin/go"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "main.go").write_text(GO_SERVER)
    (cache / "go.mod").write_text("module devboxgo\n\ngo 1.21\n")
    subprocess.run([go, "build", "-trimpath", "-ldflags=-s -w", "-o", "app.tmp", "."], cwd=cache, check=True,
                   env={**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}, capture_output=True, timeout=300)
    (cache / "app.tmp").replace(binary)
    return binary


def write_go_service(folder: Path, version: str = "v1") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(go_binary(), folder / "app")
    (folder / "VERSION").write_text(version + "\n")
    (folder / "Dockerfile").write_text(DOCKERFILE)
    return folder


def build_base_image() -> int:
    """``make install``: devbox's base image on the tests' engine, once (minutes), so that the shop's Python
    services can run in containers in the tests (test_docker_shop.py skips, saying so, without it). Where no
    engine can start it says why and exits 0: a machine without Docker still installs."""
    from devbox.mocks.deploy.base_image import build_base
    from devbox.mocks.deploy.docker import BASE_IMAGE, BuildFailed, connect

    from devbox.testing import EngineUnavailable, docker_engine

    try:
        docker_engine()
    except EngineUnavailable as exc:
        print(f"{BASE_IMAGE} not built: no Docker engine ({exc}); the tests that need it will skip")
        return 0
    client = connect()
    try:
        build_base(client, log_path=DOCKER_ROOT / "base.log", say=print)
    except BuildFailed as exc:
        print("\n".join([f"{BASE_IMAGE} not built: {exc}", *exc.tail]))
        return 1
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["base"]:
        sys.exit("usage: python -m tests.docker_images base   (build devbox-base:bookworm on the tests' engine)")
    sys.exit(build_base_image())
