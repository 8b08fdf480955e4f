// swift-tools-version:6.1
// Not ordo-one/swift-runtime-interposer: a placeholder with its name, because the local package
// mirror lacks that repository and package-benchmark 1.38.1 declares it as a dependency on
// Linux with Swift 6.3 (for retain/release counts, its `RuntimeInterposer` trait). Our
// Package.swift turns that trait off, so nothing here is linked; SwiftPM only needs the package
// to resolve. package-benchmark picks it up through RUNTIME_INTERPOSER_LOCAL_PATH (see run.sh).
import PackageDescription

let package = Package(
  name: "swift-runtime-interposer",
  products: [
    .library(name: "SwiftRuntimeInterposerSwift", targets: ["SwiftRuntimeInterposerSwift"])
  ],
  targets: [.target(name: "SwiftRuntimeInterposerSwift")]
)
