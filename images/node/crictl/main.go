// Command crictl is the node image's CRI command-line client. It answers the
// crictl commands kind runs inside a node — `images` (log collection) and
// `inspecti` (`kind load docker-image`) — plus `ps` and `pods` for people
// debugging a node, by calling the node's CRI endpoint over gRPC. (The
// upstream cri-tools module is not available from the module proxy here.)
//
//	crictl images
//	crictl inspecti IMAGE
//	crictl ps [-a]
//	crictl pods
//
// The endpoint is $CONTAINER_RUNTIME_ENDPOINT, else containerd's socket.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

const defaultEndpoint = "unix:///run/containerd/containerd.sock"

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "crictl:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: crictl images | inspecti IMAGE | ps [-a] | pods")
	}
	endpoint := os.Getenv("CONTAINER_RUNTIME_ENDPOINT")
	if endpoint == "" {
		endpoint = defaultEndpoint
	}
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("connect %s: %w", endpoint, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	images := runtimeapi.NewImageServiceClient(conn)
	runtime := runtimeapi.NewRuntimeServiceClient(conn)
	switch args[0] {
	case "images", "image", "img":
		return listImages(ctx, images, out)
	case "inspecti":
		if len(args) != 2 {
			return fmt.Errorf("inspecti wants one IMAGE")
		}
		return inspectImage(ctx, images, args[1], out)
	case "ps":
		all := len(args) > 1 && (args[1] == "-a" || args[1] == "--all")
		return listContainers(ctx, runtime, all, out)
	case "pods":
		return listPods(ctx, runtime, out)
	}
	return fmt.Errorf("unsupported command %q (this crictl knows images, inspecti, ps, pods)", args[0])
}

func listImages(ctx context.Context, c runtimeapi.ImageServiceClient, out io.Writer) error {
	resp, err := c.ListImages(ctx, &runtimeapi.ListImagesRequest{})
	if err != nil {
		return fmt.Errorf("list images: %w", err)
	}
	rows := imageRows(resp.Images)
	w := tabwriter.NewWriter(out, 0, 4, 3, ' ', 0)
	fmt.Fprintln(w, "IMAGE\tTAG\tIMAGE ID\tSIZE")
	for _, r := range rows {
		fmt.Fprintln(w, strings.Join(r, "\t"))
	}
	return w.Flush()
}

// imageRows turns images into sorted table rows: repository, tag, short ID,
// size; an image with several tags has a row per tag.
func imageRows(imgs []*runtimeapi.Image) [][]string {
	var rows [][]string
	for _, img := range imgs {
		id := strings.TrimPrefix(img.Id, "sha256:")
		if len(id) > 13 {
			id = id[:13]
		}
		size := humanSize(img.Size)
		tags := img.RepoTags
		if len(tags) == 0 {
			tags = []string{"<none>:<none>"}
		}
		for _, t := range tags {
			repo, tag := t, "<none>"
			if i := strings.LastIndex(t, ":"); i > 0 && !strings.Contains(t[i:], "/") {
				repo, tag = t[:i], t[i+1:]
			}
			rows = append(rows, []string{repo, tag, id, size})
		}
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i][0]+":"+rows[i][1] < rows[j][0]+":"+rows[j][1] })
	return rows
}

func humanSize(b uint64) string {
	const unit = 1000
	if b < unit {
		return fmt.Sprintf("%dB", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.3g%cB", float64(b)/float64(div), "kMGTPE"[exp])
}

// imageStatus is the part of `crictl inspecti`'s JSON that callers read.
type imageStatus struct {
	Status struct {
		ID          string   `json:"id"`
		RepoTags    []string `json:"repoTags"`
		RepoDigests []string `json:"repoDigests"`
		Size        string   `json:"size"`
	} `json:"status"`
}

func inspectImage(ctx context.Context, c runtimeapi.ImageServiceClient, ref string, out io.Writer) error {
	resp, err := c.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if err != nil {
		return fmt.Errorf("image status %s: %w", ref, err)
	}
	if resp.Image == nil {
		return fmt.Errorf("no such image %q present", ref)
	}
	var s imageStatus
	s.Status.ID = resp.Image.Id
	s.Status.RepoTags = nonNil(resp.Image.RepoTags)
	s.Status.RepoDigests = nonNil(resp.Image.RepoDigests)
	s.Status.Size = fmt.Sprint(resp.Image.Size)
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(s)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func listContainers(ctx context.Context, c runtimeapi.RuntimeServiceClient, all bool, out io.Writer) error {
	req := &runtimeapi.ListContainersRequest{}
	if !all {
		req.Filter = &runtimeapi.ContainerFilter{State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}}
	}
	resp, err := c.ListContainers(ctx, req)
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	w := tabwriter.NewWriter(out, 0, 4, 3, ' ', 0)
	fmt.Fprintln(w, "CONTAINER\tIMAGE\tCREATED\tSTATE\tNAME\tATTEMPT\tPOD ID")
	for _, ct := range resp.Containers {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", short(ct.Id), ct.Image.GetImage(), age(ct.CreatedAt),
			strings.TrimPrefix(ct.State.String(), "CONTAINER_"), ct.Metadata.GetName(), ct.Metadata.GetAttempt(), short(ct.PodSandboxId))
	}
	return w.Flush()
}

func listPods(ctx context.Context, c runtimeapi.RuntimeServiceClient, out io.Writer) error {
	resp, err := c.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return fmt.Errorf("list pod sandboxes: %w", err)
	}
	w := tabwriter.NewWriter(out, 0, 4, 3, ' ', 0)
	fmt.Fprintln(w, "POD ID\tCREATED\tSTATE\tNAME\tNAMESPACE\tATTEMPT")
	for _, p := range resp.Items {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\n", short(p.Id), age(p.CreatedAt), strings.TrimPrefix(p.State.String(), "SANDBOX_"),
			p.Metadata.GetName(), p.Metadata.GetNamespace(), p.Metadata.GetAttempt())
	}
	return w.Flush()
}

func short(id string) string {
	if len(id) > 13 {
		return id[:13]
	}
	return id
}

func age(createdNanos int64) string {
	return time.Since(time.Unix(0, createdNanos)).Round(time.Second).String() + " ago"
}
