package layers

import (
	"fmt"

	"github.com/casfs/casfs/errdefs"
	"golang.org/x/sys/unix"
)

// MountAt attaches an overlay of lowers (top-most first), with upper and
// work when writable, or a read-only bind of a single lower, onto the
// directory open at fd. It uses the new mount API so that the target is
// the descriptor, not a path, and lower paths need no escaping.
func MountAt(fd int, lowers []string, upper, work string, readonly bool) error {
	if len(lowers) == 0 {
		return fmt.Errorf("mount overlay: no lower directories: %w", errdefs.ErrInvalidArgument)
	}
	if (upper == "") != (work == "") || (upper == "" && !readonly) {
		return fmt.Errorf("mount overlay: upper and work go together, and a writable mount needs them: %w", errdefs.ErrInvalidArgument)
	}
	var mfd int
	var err error
	if upper == "" && len(lowers) == 1 {
		mfd, err = detachedReadOnlyBind(lowers[0])
	} else {
		mfd, err = detachedOverlay("casfs", lowers, upper, work, readonly)
	}
	if err != nil {
		return err
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", fd, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return fmt.Errorf("attach mount: %w", err)
	}
	return nil
}

// detachedOverlay makes an overlay mount of lowers (top-most first), with
// upper and work when writable, that is not attached anywhere yet: the
// caller attaches the returned fd with move_mount (and closes it). The new
// mount API takes each lower as its own option, so no path needs escaping
// and no option string can outgrow a page.
func detachedOverlay(source string, lowers []string, upper, work string, readonly bool) (int, error) {
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

// detachedReadOnlyBind is a read-only bind of src, not attached anywhere
// yet (see detachedOverlay).
func detachedReadOnlyBind(src string) (int, error) {
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
