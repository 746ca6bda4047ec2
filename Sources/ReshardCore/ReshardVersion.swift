/// The version printed by `reshard --version` and recorded by the metadata schema.
public enum ReshardVersion {
    public static let string = "0.1.0"
}
