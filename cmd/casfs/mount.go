package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/casfs/casfs/daemon"
)

// readyTimeout bounds how long `mount -d` and the mount-helper form wait for
// the background daemon to answer.
const readyTimeout = 60 * time.Second

func mountCommand() *cli.Command {
	return &cli.Command{
		Name:      "mount",
		Usage:     "show the store as a FUSE filesystem and serve the store API (foreground unless -d)",
		ArgsUsage: "MOUNTPOINT",
		Flags: append([]cli.Flag{
			&cli.BoolFlag{Name: "background", Aliases: []string{"d"}, Usage: "return once the mount answers, leaving the daemon running"},
			&cli.StringFlag{Name: "options", Aliases: []string{"o"}, Usage: "mount options: allow_other, dev, suid, nodev, nosuid, debug, ..."},
			&cli.BoolFlag{Name: "allow-other", Usage: "let other users use the mount (same as -o allow_other)"},
			&cli.IntFlag{Name: "notify-fd", Hidden: true, Usage: "write readiness to this fd (used by -d)"},
			&cli.DurationFlag{Name: "fetch-timeout", Value: 60 * time.Second, Usage: "bound on a lazy fetch; a read that waits longer gets EIO"},
			&cli.StringFlag{Name: "hosts-dir", EnvVars: []string{"CASFS_HOSTS_DIR"}, Usage: "registry host configuration for lazy fetches (default: the first of /etc/casfs/certs.d, /etc/containerd/certs.d, /etc/docker/certs.d that exists)"},
			&cli.BoolFlag{Name: "public-blobs", Usage: "let every user read blobs, manifests and configs (default: root and the mount's owner only; rootfs/ keeps each file's own mode)"},
			&cli.StringFlag{Name: "serve", Usage: "also serve the store as a read-only registry on HOST:PORT (see casfs serve)"},
		}, append(serveTLSFlags(), limitFlags()...)...),
		Action: mountAction,
	}
}

func mountAction(c *cli.Context) error {
	if err := wantArgs(c, 1, 1); err != nil {
		return err
	}
	root := c.String("root")
	cfg, err := mountConfig(root, c.Args().First(), c.String("options"))
	if err != nil {
		return err
	}
	cfg.AllowOther = cfg.AllowOther || c.Bool("allow-other")
	cfg.FetchTimeout = c.Duration("fetch-timeout")
	cfg.Registry.HostsDir = c.String("hosts-dir")
	cfg.PublicBlobs = c.Bool("public-blobs")
	if cfg.Limits, err = unpackLimits(c); err != nil {
		return err
	}
	if addr := c.String("serve"); addr != "" {
		lc, err := serveListenConfig(c, addr)
		if err != nil {
			return err
		}
		cfg.Serve = &lc
	}
	// Arguments are checked first (misuse is exit 2), then the filesystem.
	if _, err := os.Stat(root); errors.Is(err, fs.ErrNotExist) && c.IsSet("root") {
		// A mistyped --root must not silently start an empty store.
		return fmt.Errorf("store root %s does not exist (create the directory first to start a new store)", root)
	}
	if c.Bool("background") {
		return startBackground(c, cfg)
	}
	return runForeground(c, cfg, c.Int("notify-fd"))
}

// mountConfig reads mount(8)-style options. A relative mountpoint is taken
// from the current directory (the background daemon runs in /).
func mountConfig(root, mountpoint, options string) (daemon.Config, error) {
	mnt, err := filepath.Abs(mountpoint)
	if err != nil {
		return daemon.Config{}, err
	}
	cfg := daemon.Config{Root: root, Mountpoint: mnt}
	for _, o := range strings.Split(options, ",") {
		switch {
		case o == "" || o == "defaults" || o == "rw" || o == "ro" || o == "auto" || o == "noauto" ||
			o == "user" || o == "nouser" || o == "users" || o == "_netdev" || o == "nofail" ||
			o == "default_permissions" || strings.HasPrefix(o, "x-") ||
			strings.HasPrefix(o, "fsname=") || strings.HasPrefix(o, "subtype="):
			// Handled by mount(8) or always on (the mount is read-only).
		case o == "allow_other":
			cfg.AllowOther = true
		case o == "debug":
			cfg.Debug = true
		case o == "dev" || o == "nodev" || o == "suid" || o == "nosuid" || o == "exec" || o == "noexec" ||
			o == "atime" || o == "noatime" || o == "relatime":
			cfg.Options = append(cfg.Options, o)
		case strings.HasPrefix(o, "max_stack_depth="):
			if _, err := fmt.Sscanf(o, "max_stack_depth=%d", &cfg.MaxStackDepth); err != nil {
				return cfg, usagef("mount option %q: want max_stack_depth=1 or 2", o)
			}
		default:
			return cfg, usagef("unknown mount option %q", o)
		}
	}
	return cfg, nil
}

func runForeground(c *cli.Context, cfg daemon.Config, notifyFD int) error {
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var notify *os.File
	if notifyFD > 0 {
		notify = os.NewFile(uintptr(notifyFD), "notify")
		defer notify.Close()
	}
	if cfg.Serve != nil && notifyFD <= 0 {
		cfg.Listening = printListening(c)
	}
	err := daemon.Run(ctx, cfg, func() {
		notifySystemd("READY=1")
		if notify != nil {
			fmt.Fprintln(notify, "ok")
			notify.Close()
			notify = nil
		}
	})
	if err != nil && notify != nil {
		fmt.Fprintln(notify, "error: "+err.Error())
	}
	return err
}

// startBackground starts the daemon as a detached child and returns once
// it reports the mount live, or with its reason for failing.
func startBackground(c *cli.Context, cfg daemon.Config) error {
	root, err := filepath.Abs(cfg.Root)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(root, 0o711); err != nil {
		return fmt.Errorf("create store root %s: %w", root, unwrapPathErr(err))
	}
	logPath := filepath.Join(root, "casfs.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open daemon log: %w", err)
	}
	defer logFile.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	defer pr.Close()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	args := []string{"--root", root, "--log-level", "info", "mount", "--notify-fd", "3",
		"--fetch-timeout", cfg.FetchTimeout.String(), "--hosts-dir", cfg.Registry.HostsDir}
	if opts := daemonOptions(cfg); opts != "" {
		args = append(args, "-o", opts)
	}
	if cfg.PublicBlobs {
		args = append(args, "--public-blobs")
	}
	args = append(args, limitArgs(cfg.Limits)...)
	args = append(append(args, serveArgs(cfg.Serve)...), cfg.Mountpoint)
	cmd := exec.Command(self, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.ExtraFiles = []*os.File{pw}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil {
		pw.Close()
		return fmt.Errorf("start daemon: %w", err)
	}
	pw.Close()
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()

	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(pr).ReadString('\n')
		line <- strings.TrimSpace(s)
	}()
	select {
	case s := <-line:
		if s == "ok" {
			return nil
		}
		if msg, ok := strings.CutPrefix(s, "error: "); ok {
			return fmt.Errorf("mount %s: %s", cfg.Mountpoint, msg)
		}
		<-exited
		return fmt.Errorf("mount %s: the daemon exited before the mount was live (see %s): %s", cfg.Mountpoint, logPath, lastLine(logPath))
	case <-time.After(readyTimeout):
		cmd.Process.Kill()
		return fmt.Errorf("mount %s: the daemon did not answer within %v (see %s)", cfg.Mountpoint, readyTimeout, logPath)
	}
}

// daemonOptions turns a config back into -o for the child.
func daemonOptions(cfg daemon.Config) string {
	opts := append([]string{}, cfg.Options...)
	if cfg.AllowOther {
		opts = append(opts, "allow_other")
	}
	if cfg.Debug {
		opts = append(opts, "debug")
	}
	if cfg.MaxStackDepth > 0 {
		opts = append(opts, fmt.Sprintf("max_stack_depth=%d", cfg.MaxStackDepth))
	}
	return strings.Join(opts, ",")
}

func lastLine(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > 4096 {
		f.Seek(-4096, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	ls := strings.Split(strings.TrimSpace(string(b)), "\n")
	return ls[len(ls)-1]
}

// isMountHelperCall recognises the form mount(8) uses through mount.fuse3:
// casfs SOURCE MOUNTPOINT -o OPTIONS. Without -o, only a SOURCE that is an
// existing store root makes the call a mount: anything else (a mistyped
// command, `casfs pull busybox`) is an unknown command that creates nothing.
func isMountHelperCall(args []string, commands []*cli.Command) bool {
	if len(args) < 3 || strings.HasPrefix(args[1], "-") || strings.HasPrefix(args[2], "-") || isCompletionCall(args) {
		return false
	}
	if findCommand(commands, args[1]) != nil {
		return false
	}
	for _, a := range args[3:] {
		if strings.HasPrefix(a, "-o") {
			return true
		}
	}
	return isStoreRoot(args[1])
}

// isStoreRoot reports whether dir holds a casfs store (its metadata database).
func isStoreRoot(dir string) bool {
	fi, err := os.Stat(filepath.Join(dir, "meta"))
	return err == nil && fi.IsDir()
}

// mountHelper runs `casfs SOURCE MOUNTPOINT -o OPTS`: start the daemon in
// the background and return once the mount answers.
func mountHelper(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	source, mountpoint, options := args[1], args[2], ""
	rest := args[3:]
	for i := 0; i < len(rest); i++ {
		switch {
		case rest[i] == "-o" && i+1 < len(rest):
			options = strings.TrimPrefix(options+","+rest[i+1], ",")
			i++
		case strings.HasPrefix(rest[i], "-o"):
			options = strings.TrimPrefix(options+","+strings.TrimPrefix(rest[i], "-o"), ",")
		case rest[i] == "-n" || rest[i] == "-s" || rest[i] == "-f" || rest[i] == "-v":
			// mount(8) flags that do not apply: no mtab, sloppy, fake, verbose.
		default:
			return usagef("mount helper: unexpected argument %q (usage: casfs SOURCE MOUNTPOINT [-o OPTIONS])", rest[i])
		}
	}
	cfg, err := mountConfig(source, mountpoint, options)
	if err != nil {
		return err
	}
	if fi, err := os.Stat(cfg.Mountpoint); err != nil || !fi.IsDir() {
		return usagef("mount helper: mountpoint %s is not a directory (usage: casfs SOURCE MOUNTPOINT [-o OPTIONS])", mountpoint)
	}
	app := newApp(nil, stdout, stderr)
	app.Action = func(c *cli.Context) error { return startBackground(c, cfg) }
	return app.RunContext(ctx, []string{args[0], "--root", source})
}

// notifySystemd tells systemd (Type=notify units) about the daemon's state
// through $NOTIFY_SOCKET; without that variable it does nothing.
func notifySystemd(state string) {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return
	}
	if strings.HasPrefix(addr, "@") {
		addr = "\x00" + addr[1:] // abstract socket
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return
	}
	defer conn.Close()
	conn.Write([]byte(state))
}
