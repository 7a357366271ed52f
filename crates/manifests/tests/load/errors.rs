//! Bad input: every problem is reported once, with its location, and never
//! stops the documents after it.

use kproxy_manifests::Error;

use super::{at, load, names};

const SERVICE_WITH_STRING_PORT: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: ok
  namespace: default
spec:
  ports:
  - port: 80
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  ports:
  - port: "http"
---
apiVersion: v1
kind: Service
metadata:
  name: after
  namespace: default
"#;

#[test]
fn decode_error_names_file_document_object_and_field() {
    let (manifests, errors) = load("svc.yaml", SERVICE_WITH_STRING_PORT);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        errors[0].to_string(),
        r#"svc.yaml: document 2: Service default/web: spec.ports[0].port: invalid type: string "http", expected i32"#
    );
    match &errors[0] {
        Error::Decode {
            location,
            object,
            path,
            ..
        } => {
            assert_eq!(location, &at("svc.yaml", 2, None));
            assert_eq!(object.as_deref(), Some("Service default/web"));
            assert_eq!(path, "spec.ports[0].port");
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
    // The documents before and after the bad one are still read.
    assert_eq!(names(&manifests.services), ["default/ok", "default/after"]);
    assert_eq!(manifests.services[1].location, at("svc.yaml", 3, None));
}

#[test]
fn invalid_yaml_is_reported_with_its_document_and_the_rest_is_read() {
    let text = "apiVersion: v1\nkind: Node\nmetadata: {name: a}\n---\nkind: Node\nmetadata: {name: [b\n---\napiVersion: v1\nkind: Node\nmetadata: {name: c}\n";
    let (manifests, errors) = load("nodes.yaml", text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    match &errors[0] {
        Error::Yaml { location, source } => {
            assert_eq!(location, &at("nodes.yaml", 2, None));
            // Lines count from the start of the file: the broken flow
            // collection starts on line 6.
            let line = source.location().map(|l| l.line());
            assert!(matches!(line, Some(l) if l >= 6), "{line:?}");
        }
        other => panic!("expected a YAML error, got {other:?}"),
    }
    assert!(
        errors[0]
            .to_string()
            .starts_with("nodes.yaml: document 2: invalid YAML: "),
        "{}",
        errors[0]
    );
    assert!(!errors[0].to_string().contains('\n'));
    assert_eq!(names(&manifests.nodes), ["a", "c"]);
    assert_eq!(manifests.nodes[1].location, at("nodes.yaml", 3, None));
}

#[test]
fn missing_kind() {
    let text = "apiVersion: v1\nmetadata: {name: a}\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Node\n  metadata: {name: n}\n- metadata: {name: no-kind}\n";
    let (manifests, errors) = load("k.yaml", text);
    let locations: Vec<_> = errors
        .iter()
        .map(|e| match e {
            Error::MissingKind { location } => Some(location.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        locations,
        [Some(at("k.yaml", 1, None)), Some(at("k.yaml", 2, Some(1)))]
    );
    assert_eq!(
        errors[1].to_string(),
        "k.yaml: document 2, items[1]: missing field `kind`, so this is not a Kubernetes object"
    );
    assert_eq!(names(&manifests.nodes), ["n"]);
}

#[test]
fn document_that_is_not_a_mapping() {
    let (manifests, errors) = load("x.yaml", "- a\n- b\n---\njust a string\n");
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(
        errors[0].to_string(),
        "x.yaml: document 1: expected a Kubernetes object (a mapping), found a sequence"
    );
    assert_eq!(
        errors[1].to_string(),
        "x.yaml: document 2: expected a Kubernetes object (a mapping), found a string"
    );
    assert_eq!(manifests, Default::default());
}

#[test]
fn top_level_field_of_the_wrong_type_names_the_object() {
    let text = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: web-x, namespace: shop}\naddressType: IPv4\nendpoints: {}\n";
    let (manifests, errors) = load("eps.yaml", text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        errors[0].to_string(),
        "eps.yaml: document 1: EndpointSlice shop/web-x: endpoints: invalid type: map, expected a sequence"
    );
    assert!(manifests.endpoint_slices.is_empty());
}

/// k8s-openapi fills in missing required fields with their defaults; this
/// crate does not validate objects, so such objects decode (the compiler
/// decides what an empty `addressType` means).
#[test]
fn missing_required_fields_decode_as_defaults() {
    let text = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: web-x, namespace: shop}\n";
    let (manifests, errors) = load("eps.yaml", text);
    assert!(errors.is_empty(), "{errors:?}");
    let slice = &manifests.endpoint_slices[0].object;
    assert_eq!(slice.address_type, "");
    assert!(slice.endpoints.is_empty());
}

#[test]
fn error_in_a_list_item_names_the_item_and_keeps_the_others() {
    let text = r#"apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Node
  metadata: {name: good}
- apiVersion: v1
  kind: Node
  metadata: {name: bad}
  status:
    addresses:
    - {type: InternalIP, address: 10.0.0.1}
    - {type: Hostname, address: [oops]}
- apiVersion: v1
  kind: Node
  metadata: {name: also-good}
"#;
    let (manifests, errors) = load("nodes.yaml", text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        errors[0].to_string(),
        "nodes.yaml: document 1, items[1]: Node bad: status.addresses[1].address: invalid type: sequence, expected a string"
    );
    assert_eq!(names(&manifests.nodes), ["good", "also-good"]);
}

#[test]
fn wanted_kind_without_api_version_is_an_error_other_kinds_are_skipped() {
    let text = "kind: Service\nmetadata: {name: web, namespace: ns}\n---\nkind: Widget\nmetadata: {name: w}\n";
    let (manifests, errors) = load("s.yaml", text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        errors[0].to_string(),
        r#"s.yaml: document 1: Service ns/web: apiVersion: missing field, expected "v1""#
    );
    assert_eq!(manifests, Default::default());
}

#[test]
fn kind_of_the_wrong_type() {
    let (_, errors) = load("s.yaml", "apiVersion: v1\nkind: 5\n");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        errors[0].to_string(),
        "s.yaml: document 1: kind: expected a string, found a number"
    );
}

#[test]
fn list_items_of_the_wrong_type() {
    let (_, errors) = load("l.yaml", "apiVersion: v1\nkind: List\nitems: {a: 1}\n");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        errors[0].to_string(),
        "l.yaml: document 1: List: items: expected a sequence, found a mapping"
    );
}

#[test]
fn non_finite_number_has_a_path() {
    let text =
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports:\n  - port: .nan\n";
    let (_, errors) = load("s.yaml", text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let message = errors[0].to_string();
    assert!(
        message.starts_with("s.yaml: document 1: Service web: spec.ports[0].port: number "),
        "{message}"
    );
}

#[test]
fn odd_input_never_panics() {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let inputs = [
        "",
        "\u{feff}",
        "---",
        "...",
        "[",
        "{",
        "a: *undefined",
        "kind: [",
        "\tkind: Service",
        "--- |\n  text\n",
        "kind: List\nitems: 5",
        "kind: List\nitems: [null, 1, [], {}]",
        "kind: ServiceList\napiVersion: v1\nitems: [{}, {metadata: 3}]",
        "? [a]\n: b\n",
        "a: &a [*a]",
        "apiVersion: v1\nkind: Service\nspec: {ports: [{port: 99999999999999999999}]}",
        "apiVersion: v1\nkind: Service\nmetadata: {name: [x], namespace: {y: 1}}",
        "apiVersion: v1\nkind: Node\n<<: 5",
        &deep,
    ];
    for text in inputs {
        let (_, errors) = load("odd.yaml", text);
        for error in &errors {
            assert!(!error.to_string().contains('\n'), "{error}");
        }
    }
}
