import Foundation

/// A task executor with a single thread. Tasks that prefer it (`withTaskExecutorPreference`, `Task(executorPreference:)`)
/// share that thread, whatever the width of the cooperative pool: a test proves that some wait suspends rather than
/// blocks by running the wait and the task that ends it here, where a blocked thread would stop both.
public final class OneThreadExecutor: TaskExecutor, @unchecked Sendable {
    // `jobs` is guarded by `condition`.
    private let condition = NSCondition()
    private var jobs: [UnownedJob] = []

    /// One thread for the whole test process: it waits for jobs while no test uses it.
    public static let shared = OneThreadExecutor()

    private init() {
        let thread = Thread { [self] in run() }
        thread.name = "one-thread-executor"
        thread.start()
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        condition.lock()
        jobs.append(job)
        condition.signal()
        condition.unlock()
    }

    private func run() {
        while true {
            condition.lock()
            while jobs.isEmpty { condition.wait() }
            let job = jobs.removeFirst()
            condition.unlock()
            job.runSynchronously(on: asUnownedTaskExecutor())
        }
    }
}
