extension ContinuousClock.Instant {
    /// Seconds since this instant, for reports and progress lines.
    package var secondsElapsed: Double {
        let elapsed = ContinuousClock.now - self
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }
}
