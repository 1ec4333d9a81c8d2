import OCI
import Snapshotter
import Testing
import TestSupport

/// Which `Prepare` labels name a layer to mount lazily, as the CRI plugin and `ctr-remote image rpull` send them.
@Suite(.tags(.unit)) struct LazyLayerOriginTests {
    let layer = Digest.sha256(of: Array("layer".utf8))
    let manifest = Digest.sha256(of: Array("manifest".utf8))
    let toc = Digest.sha256(of: Array("toc".utf8))

    @Test func theCRIPluginsLabelsNameTheImagePinnedToItsManifest() {
        let origin = LazyLayerOrigin(labels: [
            LazyLayerOrigin.tocDigestLabel: toc.description,
            "containerd.io/snapshot/cri.image-ref": "registry.example:5000/team/etl:v1",
            "containerd.io/snapshot/cri.layer-digest": layer.description,
            "containerd.io/snapshot/cri.manifest-digest": manifest.description,
        ])
        #expect(origin == LazyLayerOrigin(reference: "registry.example:5000/team/etl@\(manifest)", layer: layer, toc: toc))
    }

    @Test func ctrRemotesLabelsNameTheImageAsGiven() {
        let origin = LazyLayerOrigin(labels: [
            LazyLayerOrigin.tocDigestLabel: toc.description,
            "containerd.io/snapshot/remote/stargz.reference": "127.0.0.1:5000/tools:esgz",
            "containerd.io/snapshot/remote/stargz.digest": layer.description,
        ])
        #expect(origin == LazyLayerOrigin(reference: "127.0.0.1:5000/tools:esgz", layer: layer, toc: toc))
    }

    @Test func aLayerWithLabelsThatDoNotParseIsNoLazyLayer() {
        let good = [
            LazyLayerOrigin.tocDigestLabel: toc.description,
            "containerd.io/snapshot/cri.image-ref": "registry.example/etl:v1",
            "containerd.io/snapshot/cri.layer-digest": layer.description,
        ]
        #expect(LazyLayerOrigin(labels: good)?.toc == toc)
        // Without a TOC it is a plain layer, mounted lazily only if a gzip index serves it (`mount --lazy-only`).
        var plain = good
        plain[LazyLayerOrigin.tocDigestLabel] = nil
        #expect(LazyLayerOrigin(labels: plain) == LazyLayerOrigin(reference: "registry.example/etl:v1", layer: layer, toc: nil))
        for (key, value) in [
            (LazyLayerOrigin.tocDigestLabel, "sha256:1234"),
            ("containerd.io/snapshot/cri.image-ref", nil), ("containerd.io/snapshot/cri.image-ref", "not a reference"),
            ("containerd.io/snapshot/cri.layer-digest", nil), ("containerd.io/snapshot/cri.layer-digest", "md5:00"),
        ] as [(String, String?)] {
            var labels = good
            labels[key] = value
            #expect(LazyLayerOrigin(labels: labels) == nil, "\(key)=\(value ?? "absent")")
        }
    }
}
