package layers

import (
	"fmt"
	"os"
	"strings"

	"github.com/casfs/casfs/errdefs"
	"golang.org/x/sys/unix"
)

// MountOverlay mounts lowers (top-most first) at target. With upper and
// work it is a writable overlay; with readonly and no upper, one lower is
// bound read-only and several are stacked by a read-only overlay. Option
// strings longer than mount(2) accepts (a page) go through the new mount
// API, one lower at a time, which also needs no escaping.
func MountOverlay(lowers []string, upper, work, target string, readonly bool) error {
	if len(lowers) == 0 {
		return fmt.Errorf("mount overlay at %s: no lower directories: %w", target, errdefs.ErrInvalidArgument)
	}
	if (upper == "") != (work == "") {
		return fmt.Errorf("mount overlay at %s: upper and work go together: %w", target, errdefs.ErrInvalidArgument)
	}
	if upper == "" && !readonly {
		return fmt.Errorf("mount overlay at %s: a writable mount needs an upper directory: %w", target, errdefs.ErrInvalidArgument)
	}
	if upper == "" && len(lowers) == 1 {
		return bindReadOnly(lowers[0], target)
	}
	escaped := make([]string, len(lowers))
	for i, l := range lowers {
		escaped[i] = escapeOption(l)
	}
	opts := "lowerdir=" + strings.Join(escaped, ":")
	if upper != "" {
		opts += ",upperdir=" + escapeOption(upper) + ",workdir=" + escapeOption(work)
	}
	var flags uintptr
	if readonly {
		flags |= unix.MS_RDONLY
	}
	if len(opts) < os.Getpagesize()-1 {
		if err := unix.Mount("overlay", target, "overlay", flags, opts); err != nil {
			return fmt.Errorf("mount overlay at %s: %w", target, err)
		}
		return nil
	}
	if err := mountOverlayFsopen(lowers, upper, work, target, readonly); err != nil {
		return fmt.Errorf("mount overlay at %s (%d lowers): %w", target, len(lowers), err)
	}
	return nil
}

// escapeOption escapes the characters overlayfs splits its options on.
func escapeOption(p string) string {
	r := strings.NewReplacer(`\`, `\\`, `,`, `\,`, `:`, `\:`)
	return r.Replace(p)
}

func bindReadOnly(src, target string) error {
	if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s at %s: %w", src, target, err)
	}
	if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		_ = unix.Unmount(target, unix.MNT_DETACH)
		return fmt.Errorf("make bind mount %s read-only: %w", target, err)
	}
	return nil
}

func mountOverlayFsopen(lowers []string, upper, work, target string, readonly bool) error {
	mfd, err := DetachedOverlay("overlay", lowers, upper, work, readonly)
	if err != nil {
		return err
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move mount: %w", err)
	}
	return nil
}

// DetachedOverlay makes an overlay mount of lowers (top-most first), with
// upper and work when writable, that is not attached anywhere yet: the
// caller attaches the returned fd with move_mount (and closes it). The new
// mount API takes each lower as its own option, so no path needs escaping
// and no option string can outgrow a page.
func DetachedOverlay(source string, lowers []string, upper, work string, readonly bool) (int, error) {
	fsfd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("fsopen overlay: %w", err)
	}
	defer unix.Close(fsfd)
	set := func(k, v string) error {
		if err := unix.FsconfigSetString(fsfd, k, v); err != nil {
			return fmt.Errorf("overlay option %s=%s: %w", k, v, err)
		}
		return nil
	}
	if err := set("source", source); err != nil {
		return -1, err
	}
	for _, l := range lowers {
		if err := set("lowerdir+", l); err != nil {
			return -1, err
		}
	}
	if upper != "" {
		if err := set("upperdir", upper); err != nil {
			return -1, err
		}
		if err := set("workdir", work); err != nil {
			return -1, err
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return -1, fmt.Errorf("create overlay: %w", err)
	}
	var attrs int
	if readonly {
		attrs |= unix.MOUNT_ATTR_RDONLY
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, attrs)
	if err != nil {
		return -1, fmt.Errorf("fsmount overlay: %w", err)
	}
	return mfd, nil
}

// DetachedReadOnlyBind is a read-only bind of src, not attached anywhere
// yet (see DetachedOverlay).
func DetachedReadOnlyBind(src string) (int, error) {
	tree, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("open_tree %s: %w", src, err)
	}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}); err != nil {
		unix.Close(tree)
		return -1, fmt.Errorf("make bind mount read-only: %w", err)
	}
	return tree, nil
}

// Unmount unmounts target.
func Unmount(target string) error {
	for {
		err := unix.Unmount(target, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("unmount %s: %w", target, err)
		}
		return nil
	}
}
