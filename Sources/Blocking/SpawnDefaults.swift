#if canImport(Glibc)
import Glibc
#endif

/// Runs `body` with posix_spawn attributes that give the child a clear signal mask and every signal's default
/// disposition (Slipway ignores SIGPIPE, and an ignored signal would be inherited by a child, a container's init
/// included), and empty file actions. `body` adds its redirections of descriptors 0 to 2, then
/// `closeInheritedDescriptors`, and spawns.
package func withSpawnDefaults<T>(
    _ body: (inout posix_spawnattr_t, inout posix_spawn_file_actions_t) throws -> T
) rethrows -> T {
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var empty = sigset_t()
    sigemptyset(&empty)
    posix_spawnattr_setsigmask(&attributes, &empty)
    var all = sigset_t()
    sigemptyset(&all)
    for number in Int32(1)...31 where number != SIGKILL && number != SIGSTOP { sigaddset(&all, number) }
    posix_spawnattr_setsigdefault(&attributes, &all)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    return try body(&attributes, &actions)
}

/// Closes every descriptor above 2 in the child (such as /dev/fuse of an in-process lazy mount). File actions run
/// in order: add this after the redirections into 0 to 2, whose sources it would close.
package func closeInheritedDescriptors(_ actions: inout posix_spawn_file_actions_t) {
    if let closeFrom = closeFromAction { _ = closeFrom(&actions, 3) }
}

/// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34+), which Swift's Glibc module does not declare.
private let closeFromAction: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32)? = {
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else { return nil }
    return unsafeBitCast(symbol, to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32).self)
}()
