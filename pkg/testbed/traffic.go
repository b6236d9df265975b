package testbed

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// Traffic tools run as helper processes inside namespaces: a test binary
// calls RunHelper from TestMain, and the bed starts the test binary itself
// with HelperEnv set (see Helper and StartHelper).

// HelperEnv names the helper action a re-executed test binary performs.
const HelperEnv = "TESTBED_HELPER"

// EchoPort is where the echo helper listens (TCP and UDP).
const EchoPort = 7000

// RunHelper performs a traffic helper action and exits when HelperEnv names
// one; otherwise it returns false.
func RunHelper() bool {
	action := os.Getenv(HelperEnv)
	if action == "" {
		return false
	}
	args := strings.Fields(os.Getenv(HelperEnv + "_ARGS"))
	var err error
	switch action {
	case "echo":
		err = serveEcho()
	case "tcp":
		err = clientTCP(args)
	case "udp":
		err = clientUDP(args)
	case "stream":
		err = clientStream(args)
	case "get":
		err = httpGet(args)
	case "probe":
		err = clientProbe(args)
	default:
		return false
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(1)
	}
	os.Exit(0)
	return true
}

// Helper runs a traffic helper action inside ns and returns its output.
func (b *Bed) Helper(ns, action string, args ...string) (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	cmdline := []string{"env", HelperEnv + "=" + action, HelperEnv + "_ARGS=" + strings.Join(args, " "), exe}
	return b.Exec(ns, cmdline...)
}

// StartHelper starts a long-running helper action inside ns.
func (b *Bed) StartHelper(ns, name, action string, args ...string) *Proc {
	exe, err := os.Executable()
	if err != nil {
		b.t.Fatal(err)
	}
	return b.Start(ns, name, []string{HelperEnv + "=" + action, HelperEnv + "_ARGS=" + strings.Join(args, " ")}, exe)
}

func serveEcho() error {
	ln, err := net.Listen("tcp", fmt.Sprintf(":%d", EchoPort))
	if err != nil {
		return err
	}
	pc, err := net.ListenPacket("udp", fmt.Sprintf(":%d", EchoPort))
	if err != nil {
		return err
	}
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			ip := from.(*net.UDPAddr).IP.String()
			_, _ = pc.WriteTo(append([]byte("FROM "+ip+"\n"), buf[:n]...), from)
		}
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			ip := c.RemoteAddr().(*net.TCPAddr).IP.String()
			fmt.Fprintf(c, "FROM %s\n", ip)
			_, _ = io.Copy(c, c)
		}()
	}
}

// clientTCP: tcp HOST BYTES — echo BYTES random bytes; prints the source the server saw.
func clientTCP(args []string) error {
	if len(args) != 2 {
		return errors.New("tcp HOST BYTES")
	}
	n, _ := strconv.Atoi(args[1])
	c, err := net.DialTimeout("tcp", net.JoinHostPort(args[0], strconv.Itoa(EchoPort)), 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(c)
	from, err := r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("read greeting: %w", err)
	}
	data := make([]byte, n)
	_, _ = rand.Read(data)
	errc := make(chan error, 1)
	go func() { _, err := c.Write(data); errc <- err }()
	got := make([]byte, n)
	if _, err := io.ReadFull(r, got); err != nil {
		return fmt.Errorf("read echo of %d bytes: %w", n, err)
	}
	if err := <-errc; err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if !bytes.Equal(got, data) {
		return errors.New("echoed data differs")
	}
	fmt.Print(strings.TrimSpace(from))
	return nil
}

// clientUDP: udp HOST SIZE — one datagram echoed (retried 5 times).
func clientUDP(args []string) error {
	if len(args) != 2 {
		return errors.New("udp HOST SIZE")
	}
	n, _ := strconv.Atoi(args[1])
	c, err := net.Dial("udp", net.JoinHostPort(args[0], strconv.Itoa(EchoPort)))
	if err != nil {
		return err
	}
	defer c.Close()
	data := make([]byte, n)
	_, _ = rand.Read(data)
	buf := make([]byte, n+100)
	for i := 0; i < 5; i++ {
		if _, err := c.Write(data); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		m, err := c.Read(buf)
		if err != nil {
			continue
		}
		line, rest, ok := bytes.Cut(buf[:m], []byte("\n"))
		if !ok || !bytes.Equal(rest, data) {
			return errors.New("echoed datagram differs")
		}
		fmt.Print(string(line))
		return nil
	}
	return fmt.Errorf("no echo of a %d-byte datagram", n)
}

// httpGet: get URL — prints the body of a 200 response.
func httpGet(args []string) error {
	if len(args) != 1 {
		return errors.New("get URL")
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(args[0])
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", args[0], resp.Status)
	}
	_, err = io.Copy(os.Stdout, resp.Body)
	return err
}

// clientStream: stream HOST SECONDS — one TCP connection, 64 KiB echoed
// every 500 ms for SECONDS; fails on any error.
func clientStream(args []string) error {
	if len(args) != 2 {
		return errors.New("stream HOST SECONDS")
	}
	secs, _ := strconv.Atoi(args[1])
	c, err := net.DialTimeout("tcp", net.JoinHostPort(args[0], strconv.Itoa(EchoPort)), 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if _, err := r.ReadString('\n'); err != nil {
		return err
	}
	fmt.Println("connected")
	end := time.Now().Add(time.Duration(secs) * time.Second)
	data := make([]byte, 64<<10)
	got := make([]byte, len(data))
	rounds := 0
	for time.Now().Before(end) {
		_, _ = rand.Read(data)
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		errc := make(chan error, 1)
		go func() { _, err := c.Write(data); errc <- err }()
		if _, err := io.ReadFull(r, got); err != nil {
			return fmt.Errorf("round %d: %w", rounds, err)
		}
		if err := <-errc; err != nil {
			return fmt.Errorf("round %d: %w", rounds, err)
		}
		if !bytes.Equal(got, data) {
			return fmt.Errorf("round %d: data differs", rounds)
		}
		rounds++
		time.Sleep(500 * time.Millisecond)
	}
	fmt.Printf("ok %d rounds\n", rounds)
	return nil
}

// clientProbe: probe HOST MILLIS SECONDS — a small UDP datagram echoed
// every MILLIS ms for SECONDS; prints "sent N answered M maxgap D": D is
// the longest time between two answers (or from the start to the first,
// or from the last to the end).
func clientProbe(args []string) error {
	if len(args) != 3 {
		return errors.New("probe HOST MILLIS SECONDS")
	}
	ms, _ := strconv.Atoi(args[1])
	secs, _ := strconv.Atoi(args[2])
	c, err := net.Dial("udp", net.JoinHostPort(args[0], strconv.Itoa(EchoPort)))
	if err != nil {
		return err
	}
	defer c.Close()
	start := time.Now()
	end := start.Add(time.Duration(secs) * time.Second)
	answered := make(chan time.Time, 1<<16)
	go func() {
		buf := make([]byte, 256)
		for {
			_ = c.SetReadDeadline(end.Add(time.Second))
			if _, err := c.Read(buf); err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					close(answered)
					return
				}
				continue // ICMP errors while the path is down
			}
			answered <- time.Now()
		}
	}()
	sent := 0
	for t := time.NewTicker(time.Duration(ms) * time.Millisecond); time.Now().Before(end); <-t.C {
		_, _ = c.Write([]byte(strconv.Itoa(sent)))
		sent++
	}
	last, n := start, 0
	var maxGap time.Duration
	for at := range answered {
		maxGap = max(maxGap, at.Sub(last))
		last, n = at, n+1
	}
	maxGap = max(maxGap, end.Sub(last))
	fmt.Printf("sent %d answered %d maxgap %s", sent, n, maxGap.Round(time.Millisecond))
	return nil
}
